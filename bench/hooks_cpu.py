"""Machine CPU per packet of each ingress hook on veth: native XDP, generic XDP, TC ingress,
each against a run with no observer, interleaved over rounds.

    sudo .venv/bin/python bench/hooks_cpu.py [--rate 300000] [--seconds 3]

Frames of 512 peers arrive on the local end of a veth pair; ncebpf counts ingress only, without
a filter. Two figures per hook: the program's own run time per packet, from the kernel's BPF
statistics (BPF_ENABLE_STATS, on only in runs of their own after the rounds: they add two clock
reads a packet; blind to what the hook costs around the program), and machine CPU per packet
from /proc/stat against a run with no observer (the whole cost — native XDP on a veth also
switches the veth to XDP's receive path — but as noisy as the machine is busy). Figures only;
never fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capture_cpu import measured, stop, veth_bench  # noqa: E402
from figures import Figure, print_machine_costs  # noqa: E402

from ncebpf.filter.frames import ETH_P_IP, IPPROTO_UDP, ethernet, ipv4, udp  # noqa: E402
from ncebpf.kernel import libbpf  # noqa: E402
from tests.netns import NCEBPF, NetnsPair  # noqa: E402

ROUNDS = 5
HOOKS = {
    "native XDP (--mode xdp --xdp-mode native)": ("xdp", "--mode", "xdp", "--xdp-mode", "native"),
    "generic XDP (--mode xdp --xdp-mode generic)": ("gen", "--mode", "xdp", "--xdp-mode",
                                                    "generic"),
    "TC ingress (--mode tc; what auto picks)": ("tc", "--mode", "tc"),
}


def frames(pair: NetnsPair) -> list[bytes]:
    return [ethernet(ipv4(f"10.77.{20 + i // 250}.{i % 250 + 1}", pair.local_v4, IPPROTO_UDP,
                          udp(bytes(18))), ETH_P_IP) for i in range(512)]


def observer(pair: NetnsPair, workdir: Path, name: str, *flags: str) -> subprocess.Popen[str]:
    """`ncebpf attach --name NAME FLAGS...` on the local end, once its control socket is up."""
    for d in ("state", "run"):
        (workdir / d).mkdir(exist_ok=True)
    proc = pair.popen(pair.local, *NCEBPF, "attach", "--no-resolve", "--iface", pair.local_if,
                      "--name", name, *flags,
                      "--statedir", str(workdir / "state"), "--piddir", str(workdir / "run"))
    deadline = time.monotonic() + 60
    while not (workdir / "run" / f"{name}.sock").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ncebpf {' '.join(flags)} exited: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc


BPF_STATS_RUN_TIME = 0
PROGRAM_RUNS = 2  # runs per hook with BPF statistics on, after the rounds


@contextlib.contextmanager
def bpf_statistics() -> Iterator[None]:
    """BPF run-time statistics on for the block (BPF_ENABLE_STATS: on while its fd is open).
    They read the clock twice a packet, which on this KVM guest (kvm-clock) cost 95 ns a run
    in a test run of an empty program (30 ns without them), more than ncebpf's program: so
    machine CPU is measured with them off, and the program's run time in runs of its own."""
    fd = libbpf._check(libbpf._lib().bpf_enable_stats(BPF_STATS_RUN_TIME), "BPF_ENABLE_STATS")
    try:
        yield
    finally:
        os.close(fd)


def program_stats(pair: NetnsPair) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the ncebpf program on the local interface's ingress."""
    net = json.loads(pair.ns(pair.local, "bpftool", "-j", "net", "show", "dev",
                             pair.local_if).stdout)[0]
    ids = [entry["id"] for entry in net.get("xdp", [])]
    ids += [entry["id"] for entry in net.get("tc", []) if entry.get("kind") ==
            "clsact/ingress" and entry.get("name", "").startswith("ncebpf")]
    info = json.loads(pair.ns(pair.local, "bpftool", "-j", "prog", "show", "id",
                              str(ids[0])).stdout)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    hz = os.sysconf("SC_CLK_TCK")
    print(f"machine CPU per packet of each ingress hook at {args.rate / 1000:.0f} kpps on veth, "
          f"{count} frames of 64 bytes from 512 peers, no filter; 2 CPUs shared")
    with veth_bench(frames) as (pair, workdir, path):
        measured(pair, path, 50_000, args.rate)  # warm up
        baselines: list[float] = []
        per_packet: dict[str, list[float]] = {label: [] for label in HOOKS}
        program: dict[str, list[float]] = {label: [] for label in HOOKS}
        counted: dict[str, str] = {}
        for _ in range(ROUNDS):  # interleaved: the VM's speed drifts between runs
            cpu, sent, _ = measured(pair, path, count, args.rate)
            baselines.append(cpu / sent)
            for label, (name, *flags) in HOOKS.items():
                proc = observer(pair, workdir, name, "--direction", "ingress", *flags)
                time.sleep(1.0)
                cpu, sent, _ = measured(pair, path, count, args.rate)
                stop(proc)
                per_packet[label].append(cpu / sent)
                totals = json.loads((workdir / "state" / f"{name}.json").read_text())["totals"]
                counted[label] = f"counted {totals['packets']} of {sent}"
        with bpf_statistics():
            for label, (name, *flags) in HOOKS.items():
                for _ in range(PROGRAM_RUNS):
                    proc = observer(pair, workdir, name, "--direction", "ingress", *flags)
                    time.sleep(1.0)
                    measured(pair, path, count, args.rate)
                    run_ns, runs = program_stats(pair)
                    stop(proc)
                    program[label].append(run_ns / max(runs, 1))
        print(f"  the program's own run time per packet (BPF statistics, with the two clock "
              f"reads they add; median (min–max) of {PROGRAM_RUNS} runs of their own)")
        for label, rounds in program.items():
            print(f"    {label:<46} {Figure.of(rounds).show('ns/packet'):>22}")
        print("  machine CPU per packet (/proc/stat, whole machine)")
        print_machine_costs(baselines, per_packet, counted, 1 / hz / count, width=46)


if __name__ == "__main__":
    main()
