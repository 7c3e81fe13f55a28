"""What `ncebpf top` costs the daemon: its CPU (utime + stime from /proc/PID/stat) while it
counts 100 000 active peers, with and without one `ncebpf top --batch --interval 1` asking.

    sudo .venv/bin/python bench/top_bench.py [--peers 100000] [--seconds 20] [--rounds 2]
                                             [--top-interval 1]

An `ncebpf attach` (default --interval 5, --no-history) counts spoofed IPv6 sources in a
test namespace, every one of them sending once a second (blast.py, --peers frames/s),
so each drain finds every peer moved: the worst case for the changes top asks for.
Rounds alternate "no top" and "top": each measures the daemon's CPU over --seconds.
The top client's own CPU is printed too. Figures only; never fails on time.

    .venv/bin/python bench/top_bench.py --render-only [--peers 100000] [--rounds 3]

times the client alone, no root: a --batch snapshot of every one of --peers IPv6 peers
(the view model, then the text), the first (addresses made) and the next ones, and a
screen of 20 rows per --by (the first regroup makes the groups' labels).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dump_bench import spoofed  # noqa: E402
from figures import Figure, show_difference  # noqa: E402
from peer_counts import process_ticks  # noqa: E402

from tests.netns import NCEBPF, DaemonProcess, NetnsPair  # noqa: E402
from tests.sendframes import write_frames  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return process_ticks(Path(f"/proc/{pid}/stat").read_text()) / TICK


def measure(pid: int, seconds: float, with_top: list[str] | None
            ) -> tuple[float, float, int, int]:
    """(daemon CPU s per s, top's CPU s per s, refreshes, refreshes of a drain of their
    own: the `drained HH:MM:SS` of one snapshot differs from the one before) over
    seconds."""
    client = subprocess.Popen(with_top, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) if with_top else None
    try:
        time.sleep(2.0 if client else 0.0)  # top's first answer (the whole table) is apart
        before = cpu_seconds(pid)
        client_before = cpu_seconds(client.pid) if client else 0.0
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        daemon = (cpu_seconds(pid) - before) / elapsed
        own = (cpu_seconds(client.pid) - client_before) / elapsed if client else 0.0
    finally:
        refreshes = fresh = 0
        if client:
            client.terminate()
            out, _ = client.communicate(timeout=30)
            refreshes = out.count("\nsort ")
            drained = [line.split(" drained ")[1].split()[0] for line in out.splitlines()
                       if line.startswith("ncebpf ") and " drained " in line]
            fresh = len([1 for at in range(len(drained))
                         if at == 0 or drained[at] != drained[at - 1]])
    return daemon, own, refreshes, fresh


def render_figures(peers: int, rounds: int) -> None:
    """Print what the client spends on a --batch snapshot and on a screen at peers peers."""
    import numpy as np

    from ncebpf.peerindex import KEY_SIZE
    from ncebpf.top import render
    from ncebpf.top.rates import PeerRates, TotalRates
    from ncebpf.top.view import BYS, Labels, ViewOptions, build, counter_values
    from ncebpf.top.wire import Header

    raw = np.zeros((peers, KEY_SIZE), np.uint8)
    raw[:, :2] = (0xFD, 0x77)
    raw[:, 12:16] = np.arange(peers, dtype=">u4").view(np.uint8).reshape(peers, 4)
    keys = raw.view(f"V{KEY_SIZE}").reshape(-1)
    rates, totals = PeerRates(), TotalRates()

    def header(t: float) -> Header:
        return Header(cursor="s:1", full=False, time=t, name="bench", device="eth0",
                      mode="tc", peers=peers, capacity=1 << 20,
                      totals={"packets": 1000 * int(t), "bytes": 100_000 * int(t)})
    for t in range(4):
        counts = np.full((peers, 4), t, np.uint64) * np.array([1, 100, 1, 10], np.uint64)
        rates.absorb(float(t), False, keys, counts, np.zeros(peers, np.bool_),
                     np.zeros(peers, np.uint32), np.full(peers, t, np.uint32), {})
        totals.add(float(t), counter_values(header(t)))
    labels = Labels(rates)
    print(f"ncebpf top's client at {peers:,} peers (no daemon)")
    for round_ in range(rounds):
        started = time.perf_counter()
        view = build(rates, totals, header(3), labels, ViewOptions(), 1 << 62, 3.0)
        built = time.perf_counter()
        text = render.batch_text(view)
        done = time.perf_counter()
        print(f"  --batch snapshot {round_ + 1} ({text.count(chr(10)):,} lines): view "
              f"{built - started:.2f} s, text {done - built:.2f} s")
    for by in (*BYS, *BYS):
        started = time.perf_counter()
        render.screen(build(rates, totals, header(3), labels, ViewOptions(by=by), 20, 3.0),
                      80, 24)
        print(f"  screen of 20 rows by {by}: {time.perf_counter() - started:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top-interval", type=float, default=1.0,
                        help="top's --interval; at the daemon's own (5) it adds no drains")
    parser.add_argument("--render-only", action="store_true",
                        help="time the client's view and text alone, no daemon, no root")
    args = parser.parse_args()
    if args.render_only:
        render_figures(args.peers, args.rounds)
        return
    total_s = args.rounds * 2 * (args.seconds + 3) + 15
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as pair:
        workdir = Path(tmp)
        frames = workdir / "frames.bin"
        write_frames(frames, spoofed(pair, args.peers))
        daemon = DaemonProcess(pair, workdir, "--filter", "udp", "--max-peers",
                               str(2 * args.peers), "--no-history")
        pid = daemon.proc.pid  # ip netns exec execs the daemon: the same process
        blaster = pair.popen(pair.remote, sys.executable, str(Path(__file__).parent / "blast.py"),
                             pair.remote_if, str(frames), str(int(args.peers * total_s)),
                             str(args.peers))
        try:
            time.sleep(8)  # every peer listed, the first drains of new peers behind us
            top = [*NCEBPF, "top", "--batch", "--interval", str(args.top_interval), "--lines", "20",
                   *daemon.args]
            alone: list[float] = []
            asked: list[float] = []
            client: list[float] = []
            refreshes = fresh = 0
            for _ in range(args.rounds):
                alone.append(measure(pid, args.seconds, None)[0])
                cost, own, count, new = measure(pid, args.seconds, top)
                asked.append(cost)
                client.append(own)
                refreshes += count
                fresh += new
            peers = daemon.dump()["users"]
        finally:
            blaster.kill()
            blaster.communicate()
            daemon.stop(timeout=120)
    print(f"ncebpf top against {peers:,} peers listed, {args.peers:,} sending once a second; "
          f"{args.rounds} rounds of {args.seconds:g} s each way")
    print(f"  daemon CPU, no top: {Figure.of(alone).show('%', 100, 1)}")
    print(f"  daemon CPU, one top --interval {args.top_interval:g}: "
          f"{Figure.of(asked).show('%', 100, 1)}")
    print(f"  what top adds to the daemon: "
          f"{show_difference(asked, alone, '% of a CPU', scale=100, digits=1)}")
    print(f"  the top client itself: {Figure.of(client).show('%', 100, 1)} "
          f"({refreshes} refreshes, {fresh} of them a new drain)")


if __name__ == "__main__":
    main()
