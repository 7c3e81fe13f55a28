"""What the HTML report costs for a large dump: render time, page size, a browser's load.

    .venv/bin/python bench/report_html_bench.py [--peers 100000] [--rounds 5] [--browser]

A synthetic dump of N peers (64 % IPv4 in 10.77.0.0/16, the rest in fd77::/16,
each named, 250 per /24) is cut by prefix (`ncebpf report`'s default), then
rendered as text, JSON and HTML, interleaved over rounds. The HTML page's size
is printed raw and gzipped (what a server that compresses would send). With
--browser, headless Chromium loads the page once (`--dump-dom`, wall time):
what a reader waits for. Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import Figure  # noqa: E402

from ncebpf.report.aggregate import aggregate  # noqa: E402
from ncebpf.report.model import Peer, Report, Snapshot  # noqa: E402
from ncebpf.report.render_html import render_html  # noqa: E402
from ncebpf.report.render_json import render_json  # noqa: E402
from ncebpf.report.render_text import render_text  # noqa: E402
from tests.browser import dump_dom  # noqa: E402

START = 1_796_000_000


def synthetic_report(peers: int) -> Report:
    ipv4 = int(peers * 0.64)
    table = tuple(
        Peer(address=f"10.77.{(i // 250) % 256}.{i % 250}" if i < ipv4
             else f"fd77:{i // 250:x}::{i % 250:x}",
             B=0, C=1, E=START + i % 3600, N=(f"host{i}.example.co.uk",),
             R=60.0 * (i % 97), S=START, T=0, W=3600.0 * (i % 1013), packets=i, bytes=i * 100)
        for i in range(peers))
    snapshot = Snapshot(source="bench", start=START, current=START + 3600,
                        hits_per_minute=0, bytes_per_second=0, users=peers, device="eth0",
                        promiscuous=False, filter="", header="", peers=table)
    return aggregate(snapshot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    report = synthetic_report(args.peers)
    renderers = {"text": render_text, "json": render_json, "html": render_html}
    rounds: dict[str, list[float]] = {name: [] for name in renderers}
    for _ in range(args.rounds):
        for name, render in renderers.items():
            began = time.perf_counter()
            render(report)
            rounds[name].append(time.perf_counter() - began)
    print(f"{args.peers} peers, {report.totals.groups} groups by prefix")
    for name, times in rounds.items():
        print(f"  render {name:<5} {Figure.of(times).show('ms', 1000)}")
    page = render_html(report).encode()
    print(f"  html page {len(page) / 1e6:.1f} MB, gzipped {len(gzip.compress(page)) / 1e6:.1f} MB")
    if args.browser:
        with tempfile.TemporaryDirectory(prefix="ncebpf-bench-") as scratch:
            path = Path(scratch) / "report.html"
            path.write_bytes(page)
            began = time.perf_counter()
            dump_dom(path, Path(scratch) / "profile")
            print(f"  chromium load (--dump-dom) {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
