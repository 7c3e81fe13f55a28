"""Machine CPU per packet of ncebpf, default mode and each hook, next to tcpdump -w /dev/null,
pmacctd (memory plugin) and darkstat counting the same frames on veth, in one run.

    sudo .venv/bin/python bench/peers_cpu.py [--rate 100000] [--seconds 4] [--rounds 5]

64-byte UDP frames from 256 peers arrive on the local end of a veth pair in test namespaces
(10.77.0.0/16), addressed to a MAC nobody has, so the local stack drops them and sends nothing
back: every observer sees exactly the frames that were sent, and nothing else. Each round runs
every observer once, and once with no observer, in an order rotated from round to round; an
observer's cost is its run minus that round's run with no observer (bench/figures.py), and a
run lasts until the observer's processes have gone idle, so a backlog it works off after the
last frame is counted too. Each observer says how many frames it saw: one that saw fewer than
were sent did less work, and its figure is flagged. The design's targets (design.md §6):
the default mode ≥ 5× less CPU per packet than tcpdump, ≥ 20× less than pmacctd and darkstat.

Next to the machine figure, two that a busy machine blurs far less but that see only part of
the cost: the CPU time of the observer's own processes (not the kernel's work for a capture
tool in softirq, such as libpcap's copy into its ring), and ncebpf's program's run time from
the kernel's BPF statistics, in runs of their own after the rounds: the statistics read the
clock twice a packet, which on a KVM guest (kvm-clock) costs more than the program, so they are
off while the machine's CPU is measured. How close the XDP program itself is to the floor of
one per-CPU hash update, without traffic, is measured by bench/run.py ("XDP, packet of a known
peer"), not here. Figures only; never fails on time.
Every observer runs in the test namespace and goes with it, on an error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capture_cpu import measured, stop, veth_bench  # noqa: E402
from figures import Figure, print_machine_costs, show_cost_ratio  # noqa: E402
from hooks_cpu import PROGRAM_RUNS, bpf_statistics, frames, observer, program_stats  # noqa: E402
from peer_counts import (  # noqa: E402
    Seen,
    darkstat_seen,
    ncebpf_seen,
    pmacct_sum,
    pmacctd_seen,
    process_ticks,
    tcpdump_seen,
)

from tests.netns import NetnsPair, run  # noqa: E402

DEFAULT = "ncebpf --mode auto (the default)"
NCEBPF_HOOKS = {
    DEFAULT: ("auto", "--mode", "auto"),
    "ncebpf, native XDP": ("xdp", "--mode", "xdp", "--xdp-mode", "native"),
    "ncebpf, generic XDP": ("gen", "--mode", "xdp", "--xdp-mode", "generic"),
    "ncebpf, TC": ("tc", "--mode", "tc"),
}
TCPDUMP, PMACCTD, DARKSTAT = "tcpdump -w /dev/null", "pmacctd -P memory", "darkstat"
TARGETS = {TCPDUMP: 5.0, PMACCTD: 20.0, DARKSTAT: 20.0}  # design.md §6
PEER_TOOLS = ("tcpdump", "pmacctd", "pmacct", "darkstat")
DARKSTAT_PORT = 6670  # on the local namespace's loopback only
STARTUP = 60.0  # seconds an observer may take to start, on a busy machine
IDLE_CAP = 15.0  # seconds an observer may go on working after the last frame
# libpcap hands frames over in blocks and passes on a partly filled one only after its timeout
# (1 s in tcpdump): every run, the one with no observer too, lasts this long after the last
# frame, so the last block is read inside the run.
IDLE_MIN = 1.2
# Fetch a page from inside the namespace; no proxy from the environment.
FETCH = ("import sys, urllib.request as u; sys.stdout.write(u.build_opener(u.ProxyHandler({}))"
         ".open(sys.argv[1], timeout=20).read().decode())")


class ToolRun:
    """A peer tool running in the local namespace, its output in a log file of the run's
    temp dir (a pipe nobody reads would stop a chatty tool). finish() -> what it saw."""

    def __init__(self, pair: NetnsPair, workdir: Path, name: str, argv: list[str],
                 ready: Callable[[], bool], seen: Callable[[ToolRun], Seen]) -> None:
        self.pair, self.name, self.seen = pair, name, seen
        self.log = workdir / f"{name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", pair.local, *argv],
                                         stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + STARTUP
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"{name} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def finish(self) -> Seen:
        """What the tool saw, asked while it runs where it must be, then SIGTERM."""
        return self.seen(self)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit(f"{self.name} did not exit on SIGTERM within 60 s") from None
        return self.log.read_text()


class NcebpfRun:
    """`ncebpf attach` with the flags of one hook; what it saw, from its final dump."""

    def __init__(self, pair: NetnsPair, workdir: Path, name: str, flags: tuple[str, ...]) -> None:
        self.pair, self.dump = pair, workdir / "state" / f"{name}.json"
        self.dump.unlink(missing_ok=True)
        self.proc = observer(pair, workdir, name, *flags)
        self.hook = attached_hook(pair)

    def finish(self) -> Seen:
        said = stop(self.proc)
        seen = ncebpf_seen(json.loads(self.dump.read_text())["totals"])
        fallback = " (fell back to libpcap)" if "libpcap in user space" in said else ""
        return Seen(seen.frames, f"{seen.detail}; attached: {self.hook}{fallback}")


def attached_hook(pair: NetnsPair) -> str:
    """Which hook ncebpf counts ingress with on the local end, as bpftool shows it."""
    net = json.loads(pair.ns(pair.local, "bpftool", "-j", "net", "show", "dev",
                             pair.local_if).stdout)[0]
    for entry in net.get("xdp", []):
        return {"driver": "native XDP", "generic": "generic XDP"}.get(entry.get("mode"),
                                                                       "XDP")
    if any(entry.get("kind") == "clsact/ingress" for entry in net.get("tc", [])):
        return "TC ingress"
    return "no kernel hook"


def fetch(pair: NetnsPair, url: str) -> str:
    """The page at url from inside the local namespace; '' when it did not answer."""
    try:
        return pair.ns(pair.local, sys.executable, "-c", FETCH, url, check=False,
                       timeout=30).stdout
    except subprocess.TimeoutExpired:
        return ""


def tcpdump(pair: NetnsPair, workdir: Path) -> ToolRun:
    # -Z root: dropping to user tcpdump would chown /dev/null to it. Its defaults otherwise
    # (buffer, snap length): the command the issue names.
    log = workdir / "tcpdump.log"
    return ToolRun(pair, workdir, "tcpdump",
                   ["tcpdump", "-Z", "root", "-i", pair.local_if, "-w", "/dev/null"],
                   ready=lambda: "listening on" in log.read_text(),
                   seen=lambda run: tcpdump_seen(run.stop()))


def pmacctd(pair: NetnsPair, workdir: Path) -> ToolRun:
    """pmacctd with the memory plugin, per pair of hosts. plugin_pipe_size and
    plugin_buffer_size as pmacct's CONFIG-KEYS advises for heavy traffic (1:1000): with the
    defaults (no buffering) its memory plugin stopped counting after ~280 frames here."""
    pipe = workdir / "pmacct.pipe"
    pipe.unlink(missing_ok=True)
    config = workdir / "pmacctd.conf"
    config.write_text("daemonize: false\n"
                      f"pcap_interface: {pair.local_if}\n"
                      "aggregate: src_host, dst_host\n"
                      "plugins: memory\n"
                      f"imt_path: {pipe}\n"
                      "plugin_pipe_size: 10240000\n"
                      "plugin_buffer_size: 10240\n")

    def seen(run: ToolRun) -> Seen:
        try:
            table = pmacct_sum(pair.ns(pair.local, "pmacct", "-p", str(pipe), "-c", "dst_host",
                                       "-N", pair.local_v4, "-S", "-n", "packets",
                                       check=False, timeout=20).stdout)
        except subprocess.TimeoutExpired:
            table = None  # its plugin is still busy
        return pmacctd_seen(run.stop(), table)

    # stdbuf -oL: its core prints libpcap's statistics on stdout as it exits; into a file,
    # block-buffered, that line was missing in some runs.
    return ToolRun(pair, workdir, "pmacctd", ["stdbuf", "-oL", "pmacctd", "-f", str(config)],
                   ready=pipe.exists, seen=seen)


def darkstat(pair: NetnsPair, workdir: Path) -> ToolRun:
    """darkstat in the foreground, chrooted to an empty directory of its own (darkstat(8): it
    needs write access there only for --export and --daylog, not used), no DNS (ncebpf runs
    with --no-resolve), its web page on the namespace's loopback."""
    chroot = workdir / "darkstat-root"
    chroot.mkdir(mode=0o755, exist_ok=True)
    url = f"http://127.0.0.1:{DARKSTAT_PORT}/"
    return ToolRun(pair, workdir, "darkstat",
                   ["darkstat", "-i", pair.local_if, "--no-daemon", "--no-dns",
                    "--chroot", str(chroot), "-b", "127.0.0.1", "-p", str(DARKSTAT_PORT)],
                   ready=lambda: "darkstat" in fetch(pair, url),
                   seen=lambda run: _darkstat_then_stop(run, fetch(pair, url)))


def _darkstat_then_stop(run: ToolRun, page: str) -> Seen:
    run.stop()
    return darkstat_seen(page)


def namespace_pids(pair: NetnsPair) -> list[str]:
    return run("ip", "netns", "pids", pair.local, check=False).stdout.split()


def ticks(pids: list[str]) -> int:
    """User + system clock ticks the processes have used so far (one that exited: none)."""
    total = 0
    for pid in pids:
        try:
            total += process_ticks(Path(f"/proc/{pid}/stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


@dataclass
class Idle:
    """Waits until the processes in the local namespace stop using CPU: one observer's
    backlog is part of its cost. capped: runs where it was still busy after IDLE_CAP."""

    pair: NetnsPair
    capped: list[bool] = field(default_factory=list)

    def __call__(self) -> None:
        pids = namespace_pids(self.pair)
        time.sleep(IDLE_MIN)
        deadline, last = time.monotonic() + IDLE_CAP, ticks(pids)
        while True:
            time.sleep(0.3)
            now = ticks(pids)
            if now == last or time.monotonic() > deadline:
                self.capped.append(now != last)
                return
            last = now


def wait_namespace_empty(pair: NetnsPair) -> None:
    """No process of one observer left to run into the next run (a plugin that outlived its
    core, say): wait for them, then kill them."""
    deadline = time.monotonic() + 10
    while pids := namespace_pids(pair):
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        time.sleep(0.1)


def worst_note(results: list[tuple[Seen, int]]) -> str:
    """The note of the round in which the observer saw the smallest share of the frames sent,
    and in how many rounds it saw fewer than were sent."""
    def share(result: tuple[Seen, int]) -> float:
        seen, sent = result
        return -1.0 if seen.frames is None else seen.frames / sent

    seen, sent = min(results, key=share)
    fewer = sum(1 for s, n in results if s.frames is None or s.frames < n)
    rounds = f" (fewer in {fewer} of {len(results)} rounds)" if fewer else ""
    return seen.note(sent) + rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100_000, help="frames per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of traffic per run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    missing = [tool for tool in PEER_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `make install-dev` "
                         "(scripts/install-system-deps --test installs them)")
    # SIGTERM and SIGHUP unwind like Ctrl-C: every observer and both namespaces go.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _: sys.exit(128 + signum))
    count = int(args.rate * args.seconds)
    hz = os.sysconf("SC_CLK_TCK")
    print(f"machine CPU per packet of ncebpf and its peers at {args.rate / 1000:.0f} kpps on "
          f"veth, {count} frames of 64 bytes from 256 peers per run; {os.cpu_count()} CPUs")
    with veth_bench(frames) as (pair, workdir, path):
        def ncebpf(name: str, flags: tuple[str, ...]) -> Callable[[], NcebpfRun]:
            return lambda: NcebpfRun(pair, workdir, name, flags)

        observers: dict[str, Callable[[], NcebpfRun | ToolRun]] = {
            label: ncebpf(name, tuple(flags)) for label, (name, *flags) in NCEBPF_HOOKS.items()}
        observers |= {TCPDUMP: lambda: tcpdump(pair, workdir),
                      PMACCTD: lambda: pmacctd(pair, workdir),
                      DARKSTAT: lambda: darkstat(pair, workdir)}
        idle = Idle(pair)
        measured(pair, path, 50_000, args.rate)  # warm up
        baselines: list[float] = []
        per_packet: dict[str, list[float]] = {label: [] for label in observers}
        results: dict[str, list[tuple[Seen, int]]] = {label: [] for label in observers}
        still_busy: dict[str, int] = {label: 0 for label in observers}
        own: dict[str, list[float]] = {label: [] for label in observers}
        program: dict[str, list[float]] = {label: [] for label in NCEBPF_HOOKS}
        runs = [None, *observers]  # None: the run with no observer
        for round_ in range(args.rounds):
            # Rotated: an observer that runs first (or right after another's teardown) in one
            # round runs elsewhere in the next.
            shift = round_ % len(runs)
            for label in runs[shift:] + runs[:shift]:
                if label is None:
                    cpu, sent, _ = measured(pair, path, count, args.rate, idle)
                    baselines.append(cpu / sent)
                    continue
                running = observers[label]()
                time.sleep(1.0)
                pids = namespace_pids(pair)
                before = ticks(pids)
                cpu, sent, _ = measured(pair, path, count, args.rate, idle)
                own[label].append((ticks(pids) - before) / hz / sent)
                still_busy[label] += idle.capped[-1]
                results[label].append((running.finish(), sent))
                per_packet[label].append(cpu / sent)
                wait_namespace_empty(pair)
            print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr)
        with bpf_statistics():  # the program's own run time, in runs of their own
            for label in NCEBPF_HOOKS:
                for _ in range(PROGRAM_RUNS):
                    running = observers[label]()
                    measured(pair, path, count, args.rate, idle)
                    run_ns, run_count = program_stats(pair)
                    program[label].append(run_ns / max(run_count, 1) / 1e9)
                    running.finish()
                    wait_namespace_empty(pair)
        notes = {label: worst_note(results[label]) + (
            f"; still busy {IDLE_CAP:g} s after the last frame in {still_busy[label]} rounds"
            if still_busy[label] else "") for label in observers}
        resolution = 1 / hz / count  # one clock tick spread over a run's frames
        print_machine_costs(baselines, per_packet, notes, resolution, width=34)
        print("  each observer's own processes (user + system time, exact: blind to the kernel "
              "work done for it in softirq, such as libpcap's copy into its ring) and, for "
              f"ncebpf, its program's run time (BPF statistics, on in {PROGRAM_RUNS} runs of "
              "their own after the rounds: with the two clock reads they add a packet)")
        for label in observers:
            line = f"    {label:<32} processes {Figure.of(own[label]).show('ns/packet', 1e9):>24}"
            if label in program:
                line += f"; program {Figure.of(program[label]).show('ns/packet', 1e9)}"
            print(line)
        print(f"  {DEFAULT} against each peer (how many times its cost per packet is the "
              "default mode's):")
        for peer, target in TARGETS.items():
            verdict = show_cost_ratio(peer, DEFAULT, per_packet, baselines, resolution, target)
            fewer = any(s.frames is None or s.frames < n for s, n in results[peer])
            caveat = f"; {peer} saw fewer frames than were sent" if fewer else ""
            print(f"    {peer:<22} {verdict}{caveat}")
        print("  The XDP program's own cost per packet against the floor of one per-CPU hash "
              "update: bench/run.py.")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started is gone: the with-blocks in main() undid it
