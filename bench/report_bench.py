"""What `ncebpf report` costs over a large dump, end to end (issue 11.7: ≤ 2 s at 100 000 peers).

    .venv/bin/python bench/report_bench.py [--peers 100000] [--rounds 3]

A synthetic table of N peers (half IPv4 in 10.77.0.0/16, half IPv6 in
fd77::/16, a third of them with two names) is dumped by ncebpf's own
writers as JSON and as `.stats`; then `ncebpf report` runs as a command on
each, by prefix and by domain, in each format, output to /dev/null: the
wall time a user waits, interpreter start and imports included, median and
range over rounds (interleaved). Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import Figure  # noqa: E402

from ncebpf.accounting import PeerTable, Totals, peer_key  # noqa: E402
from ncebpf.dump import DumpContext, pieces  # noqa: E402

TARGET_S = 2.0
NCEBPF = [sys.executable, "-m", "ncebpf", "report"]
START = 1_796_000_000


def write_dumps(peers: int, directory: Path) -> dict[str, Path]:
    table = PeerTable(start=START)
    for i in range(peers):
        address = f"10.77.{(i >> 8) & 255}.{i & 255}" if i % 2 else \
            f"fd77:{i >> 16:x}::{i & 0xffff:x}"
        key = peer_key(address)
        table.add(key, 3 + i % 7, 330 + i, START + 1, START + 10)
        if i % 3 == 0:
            table.peers[key].N = [f"host{i}.site{i % 97}.example.co.uk", f"alias{i}.example.net"]
    table.totals = Totals(packets=sum(r.packets for r in table.peers.values()),
                          bytes=sum(r.bytes for r in table.peers.values()))
    context = DumpContext("bench", "eth0", "tc", filter="udp")
    paths = {"json": directory / "bench.json", "stats": directory / "bench.stats"}
    for fmt, path in (("json", paths["json"]), ("perl", paths["stats"])):
        path.write_text("".join(text for text, _ in pieces(fmt, table, context, START + 100)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        dumps = write_dumps(args.peers, Path(scratch))
        cases = [(source, by, fmt) for source in dumps for by in ("cidr", "domain", "peer")
                 for fmt in ("text", "json", "html")]
        rounds: dict[tuple[str, str, str], list[float]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for case in cases:
                source, by, fmt = case
                started = time.perf_counter()
                subprocess.run([*NCEBPF, "--by", by, "--format", fmt, "--output", "/dev/null",
                                str(dumps[source])], check=True)
                rounds[case].append(time.perf_counter() - started)
        sizes = {source: path.stat().st_size / (1 << 20) for source, path in dumps.items()}
    print(f"ncebpf report over a dump of {args.peers:,} peers, wall time of the command "
          f"(target ≤ {TARGET_S:g} s; upstream's Report.pm: not runnable here)")
    for (source, by, fmt), times in rounds.items():
        figure = Figure.of(times)
        print(f"  {source:5} ({sizes[source]:5.1f} MiB) --by {by:6} --format {fmt:4}  "
              f"{figure.show('s', digits=2)}")


if __name__ == "__main__":
    main()
