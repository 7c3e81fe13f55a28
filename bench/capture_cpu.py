"""Machine CPU per packet while counting ~400 kpps on veth: ncebpf (kernel), ncebpf (pcap),
and tcpdump -w /dev/null with the same filter, each against a run with no observer.

    sudo .venv/bin/python bench/capture_cpu.py [--rate 400000] [--seconds 4]

Also: the highest rate pcap mode sustains without drops, and the in-kernel payload
search per packet (BPF_PROG_TEST_RUN). Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from figures import Figure, print_machine_costs, show_cost_ratio  # noqa: E402

from ncebpf.filter.frames import ETH_P_IP, IPPROTO_UDP, ethernet, ipv4, udp  # noqa: E402
from ncebpf.kernel import libbpf  # noqa: E402
from ncebpf.kernel.build import BuildOptions, PayloadOptions, loaded_programs  # noqa: E402
from ncebpf.payload import fold  # noqa: E402
from tests.netns import NCEBPF, NetnsPair  # noqa: E402
from tests.sendframes import write_frames  # noqa: E402

FILTER = "udp"
MATCH, PAYLOAD, SNAPLEN = "x-evil", "42", "298"
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal
ROUNDS = 5


def busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(fields[i]) for i in BUSY_FIELDS)


def frames(pair: NetnsPair) -> list[bytes]:
    """512 peers; one frame in four carries the match string."""
    out = []
    for i in range(512):
        data = (b"GET /x-EVIL HTTP" if i % 4 == 0 else b"GET /index HTTP") + bytes(6)
        out.append(ethernet(ipv4(f"10.77.{20 + i // 250}.{i % 250 + 1}", pair.local_v4,
                                 IPPROTO_UDP, udp(data)), ETH_P_IP))
    return out


def blast(pair: NetnsPair, path: Path, count: int, rate: float) -> tuple[int, float]:
    out = pair.ns(pair.remote, sys.executable, str(Path(__file__).parent / "blast.py"),
                  pair.remote_if, str(path), str(count), str(rate), timeout=600).stdout.split()
    return int(out[0]), float(out[1])


@contextmanager
def veth_bench(frames_of: Callable[[NetnsPair], list[bytes]]
               ) -> Iterator[tuple[NetnsPair, Path, Path]]:
    """(pair, scratch directory, frames file) for a benchmark on a quiet veth pair in test
    namespaces, the file holding frames_of(pair). On the way out the namespaces go first,
    with every process in them, then the files those processes were writing."""
    with tempfile.TemporaryDirectory() as tmp, \
            NetnsPair(remote_ipv6=False, local_ipv6=False) as pair:
        workdir = Path(tmp)
        path = workdir / "frames.bin"
        write_frames(path, frames_of(pair))
        yield pair, workdir, path


def measured(pair: NetnsPair, path: Path, count: int, rate: float,
             settle: Callable[[], object] = lambda: time.sleep(0.3)) -> tuple[float, int, float]:
    """(busy CPU seconds, frames sent, seconds) of one paced send. settle: returns once the
    receive side has finished with the frames (by default, 0.3 s after the last)."""
    hz = os.sysconf("SC_CLK_TCK")
    before = busy_jiffies()
    sent, seconds = blast(pair, path, count, rate)
    settle()
    return (busy_jiffies() - before) / hz, sent, seconds


def ncebpf_observer(pair: NetnsPair, workdir: Path, mode: str) -> subprocess.Popen[str]:
    for d in ("state", "run"):
        (workdir / d).mkdir(exist_ok=True)
    proc = pair.popen(pair.local, *NCEBPF, "attach", "--no-resolve", "--iface", pair.local_if,
                      "--mode", mode,
                      "--direction", "ingress", "--filter", FILTER, "--match", MATCH,
                      "--payload", PAYLOAD, "--snaplen", SNAPLEN, "--name", mode,
                      "--statedir", str(workdir / "state"), "--piddir", str(workdir / "run"))
    deadline = time.monotonic() + 60
    while not (workdir / "run" / f"{mode}.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def observer_note(label: str, said: str, workdir: Path) -> str:
    if label.startswith("tcpdump"):
        return "; ".join(line for line in said.splitlines()
                         if "captured" in line or "dropped" in line)
    mode = {"XDP": "xdp", "TC ": "tc", "pcap": "pcap"}
    name = next(m for key, m in mode.items() if key in label)
    totals = json.loads((workdir / "state" / f"{name}.json").read_text())["totals"]
    seen = totals["packets"] + totals["filtered_out"] + totals["dropped"]
    return f"counted {seen} frames, dropped {totals['dropped']}"


def search_cost() -> None:
    print(f"in-kernel payload search, BPF_PROG_TEST_RUN (XDP, median (min–max) of {ROUNDS} "
          "rounds of 1,000,000 repeats)")
    options = PayloadOptions(fold(b"x-evil"), b"", 42, 298)
    with loaded_programs(BuildOptions(max_peers=64, payload=options)) as programs:
        head = bytes(42)
        cases = [("early match (needle at the window's start)", head + b"X-EVIL" + bytes(250)),
                 ("full 256-byte window, no match", head + b"z" * 256),
                 ("full window of near misses ('x-evi' repeated)", head + b"x-evi" * 51 + b"z"),
                 ("frame shorter than the window start", bytes(40))]
        for label, frame in cases:
            ns = Figure.of([libbpf.prog_test_run(programs.payload_verdict.fd, frame,
                                                 1_000_000).duration_ns for _ in range(ROUNDS)])
            print(f"  {label:<52} {ns.show('ns'):>16}")


def report(baselines: list[float], per_packet: dict[str, list[float]], notes: dict[str, str],
           hz: int, count: int) -> None:
    """Cost of each observer = its run minus the baseline of the same round, in ns/packet;
    a cost within the noise is said to be so, and ratios only between costs that stand out."""
    resolution = 1 / hz / count  # one clock tick spread over the run's frames
    print_machine_costs(baselines, per_packet, notes, resolution)

    for label in ("ncebpf, pcap mode", "tcpdump -w /dev/null"):
        for kernel in ("ncebpf, kernel: XDP + search", "ncebpf, kernel: TC ingress + search"):
            verdict = show_cost_ratio(label, kernel, per_packet, baselines, resolution)
            print(f"  {label} / {kernel}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    search_cost()
    count = int(args.rate * args.seconds)
    print(f"machine CPU per packet at {args.rate / 1000:.0f} kpps on veth, {count} frames, "
          f"filter {FILTER!r}, match {MATCH!r} in [{PAYLOAD}, {SNAPLEN}); 2 CPUs")
    with veth_bench(frames) as (pair, workdir, path):
        blast(pair, path, 50_000, args.rate)  # warm up
        observers = {
            "ncebpf, kernel: XDP + search": lambda: ncebpf_observer(pair, workdir, "xdp"),
            "ncebpf, kernel: TC ingress + search": lambda: ncebpf_observer(pair, workdir, "tc"),
            "ncebpf, pcap mode": lambda: ncebpf_observer(pair, workdir, "pcap"),
            "tcpdump -w /dev/null": lambda: pair.popen(
                # -Z root: dropping to user tcpdump would chown /dev/null to it.
                pair.local, "tcpdump", "-Z", "root", "-i", pair.local_if, "-B", "65536", "-s",
                "298", "-w", "/dev/null", "-Q", "in", FILTER),
        }
        baselines: list[float] = []
        per_packet: dict[str, list[float]] = {label: [] for label in observers}
        notes: dict[str, str] = {}
        for _ in range(ROUNDS):  # interleaved: the VM's speed drifts between runs
            cpu, sent, _ = measured(pair, path, count, args.rate)
            baselines.append(cpu / sent)
            for label, start in observers.items():
                proc = start()
                time.sleep(1.0)
                cpu, sent, _ = measured(pair, path, count, args.rate)
                said = stop(proc)
                per_packet[label].append(cpu / sent)
                notes[label] = observer_note(label, said, workdir)
        report(baselines, per_packet, notes, os.sysconf("SC_CLK_TCK"), count)
        print(f"pcap mode drops at each rate ({args.seconds:g} s runs, 64 MiB capture buffer)")
        for rate in (100_000, 200_000, 300_000, 400_000, 500_000):
            proc = ncebpf_observer(pair, workdir, "pcap")
            time.sleep(0.5)
            sent, seconds = blast(pair, path, int(rate * args.seconds), rate)
            time.sleep(0.5)
            stop(proc)
            totals = json.loads((workdir / "state" / "pcap.json").read_text())["totals"]
            print(f"  asked {rate / 1000:4.0f} kpps, sent {sent / seconds / 1000:4.0f} kpps: "
                  f"dropped {totals['dropped']} of {sent}")


if __name__ == "__main__":
    main()
