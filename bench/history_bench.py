"""What the history costs (issue 14 item 5): one bin written, the size of a row, a week's
report.

    .venv/bin/python bench/history_bench.py [--peers 100000] [--report-peers 10000]
                                            [--rounds 3] [--history-bins 12]
                                            [--no-postgresql]

- Writing one closed 5-minute bin of N active peers (store.write_bin: the rows,
  the bin's totals, its hour and day noted) into SQLite, the default, and into
  PostgreSQL (a private server started for the run, as the tests do; needs root
  and Debian's postgresql), median and range over rounds, each after an hour of
  bins of the same peers (a write that grows with the history shows). Target:
  SQLite ≤ 1 s at 100 000 peers.
- The SQLite file's size per peer-bin row, indexes included, after those writes.
- A 7-day report over M peers active in every bin: 6 days written as hourly bins
  and rolled up into days, the last day as 5-minute bins (288), which is what the
  retention tiers leave a week after; then `ncebpf report --since ... --until ...`
  as a command, by prefix, text and HTML (the HTML with its chart over time).
  Target ≤ 2 s at 10 000 peers.
Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import Figure  # noqa: E402

from ncebpf.accounting import peer_key  # noqa: E402
from ncebpf.history import store  # noqa: E402
from ncebpf.history.bins import ClosedBin, OpenBin  # noqa: E402
from ncebpf.peerindex import key_array  # noqa: E402

WRITE_TARGET_S = 1.0
REPORT_TARGET_S = 2.0
SOURCE = store.Source("bench", "default")
DAY = store.DAY_S
NOW = 1_796_000_000 - 1_796_000_000 % DAY  # a UTC midnight


def a_bin(peers: int, start: int, seconds: int = 300) -> ClosedBin:
    keys = key_array(b"".join(
        peer_key(str(ipaddress.IPv4Address(0x0A4D0000 + i)) if i % 2 else
                 f"fd77::{i >> 16:x}:{i & 0xffff:x}") for i in range(peers)))
    rng = np.random.default_rng(peers)
    opened = OpenBin(start, seconds)
    opened.add(keys, rng.integers(1, 10**6, size=(peers, 4), dtype=np.uint64), start + 7)
    return opened.closed().with_names({i: (f"host{i}.example.net",) for i in range(0, peers, 3)})


def time_writes(url: str, closed: ClosedBin, rounds: int, before: int) -> list[float]:
    """Seconds to write each of `rounds` bins after `before` bins of the same peers: a
    write's cost may grow with the history the database holds."""
    times = []
    with store.opened(url) as engine:
        for n in range(before + rounds):
            moved = ClosedBin(closed.start + 300 * n, 300, closed.keys, closed.counts,
                              closed.first_seen, closed.last_seen, closed.names)
            started = time.perf_counter()
            store.write_bin(engine, SOURCE, moved, NOW)
            if n >= before:
                times.append(time.perf_counter() - started)
    return times


def write_week(url: str, peers: int) -> None:
    with store.opened(url) as engine:
        hourly = a_bin(peers, 0, 3600)
        for hour in range(6 * 24):
            start = NOW - 7 * DAY + hour * 3600
            store.write_bin(engine, SOURCE, ClosedBin(
                start, 3600, hourly.keys, hourly.counts, hourly.first_seen + start,
                hourly.last_seen + start, hourly.names), NOW)
        fine = a_bin(peers, 0)
        for n in range(288):
            start = NOW - DAY + 300 * n
            store.write_bin(engine, SOURCE, ClosedBin(
                start, 300, fine.keys, fine.counts, fine.first_seen + start,
                fine.last_seen + start, fine.names), NOW)
        store.roll_up(engine, SOURCE, NOW)  # every hour and day summed, as a week after
        store.refresh_statistics(engine)


def time_reports(url: str, rounds: int) -> dict[str, list[float]]:
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW - 7 * DAY))
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW))
    times: dict[str, list[float]] = {"text": [], "html": []}
    for _ in range(rounds):
        for fmt in times:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ncebpf", "report", "--since", since,
                            "--until", until, "--history", url, "--format", fmt, "--output",
                            "/dev/null"], check=True)
            times[fmt].append(time.perf_counter() - started)
    return times


def postgres_writes(closed: ClosedBin, rounds: int, before: int) -> list[float] | str:
    from tests.db_servers import PostgresServer, servers_available

    missing = servers_available().get("postgresql")
    if missing:
        return missing
    directory = Path(tempfile.mkdtemp(prefix="ncebpf-bench-pg-"))
    directory.chmod(0o755)
    try:
        with PostgresServer(directory / "server") as server:
            return time_writes(server.url, closed, rounds, before)
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100_000)
    parser.add_argument("--report-peers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history-bins", type=int, default=12,
                        help="bins written before the timed ones (default 12: an hour)")
    parser.add_argument("--no-postgresql", action="store_true")
    args = parser.parse_args()
    closed = a_bin(args.peers, NOW)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "h.db"
        sqlite = time_writes(f"sqlite:///{path}", closed, args.rounds, args.history_bins)
        size = sum(p.stat().st_size for p in Path(scratch).glob("h.db*"))
        rows = args.peers * (args.rounds + args.history_bins)
        week = Path(scratch) / "week.db"
        started = time.perf_counter()
        write_week(f"sqlite:///{week}", args.report_peers)
        built = time.perf_counter() - started
        reports = time_reports(f"sqlite:///{week}", args.rounds)
    postgres = None if args.no_postgresql or os.geteuid() != 0 else \
        postgres_writes(closed, args.rounds, args.history_bins)
    print(f"history: one 5-minute bin of {args.peers:,} active peers written after "
          f"{args.history_bins} bins of them (target ≤ {WRITE_TARGET_S:g} s into SQLite; "
          "pmacct's sql plugins: not measured)")
    print(f"  SQLite      {Figure.of(sqlite).show('s', digits=2)}")
    if isinstance(postgres, list):
        print(f"  PostgreSQL  {Figure.of(postgres).show('s', digits=2)}")
    else:
        print(f"  PostgreSQL  not measured: {postgres or 'asked not to'}")
    print(f"  SQLite size {size / rows:.0f} B per peer-bin row ({rows:,} rows, indexes and "
          "the bins' totals included)")
    print(f"a 7-day report over {args.report_peers:,} peers active in every bin (target ≤ "
          f"{REPORT_TARGET_S:g} s; the week written in {built:.0f} s), wall time of "
          "`ncebpf report --since --until`:")
    for fmt, times in reports.items():
        print(f"  --format {fmt:4}  {Figure.of(times).show('s', digits=2)}")


if __name__ == "__main__":
    main()
