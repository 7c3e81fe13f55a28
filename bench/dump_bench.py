"""What a dump of a large table costs: time and the daemon's peak memory (issue 9.2).

    sudo .venv/bin/python bench/dump_bench.py [--peers 1000000]

1. Rendering alone, in a child process per figure, on a synthetic table of N
   peers: the streamed pieces written to a file (today) against the whole
   text built in memory first (ncebpf before issue 9), time and peak RSS above
   the table's own RSS.
2. End to end: an `ncebpf attach` in a test namespace counts N spoofed IPv6
   sources (fd77::/16); then `ncebpf dump` right after the flood (its drain
   creates N records), a second `ncebpf dump` (a steady drain), and the final
   dump at SIGTERM, timed from the signal to the exit. Peak memory is the daemon's VmHWM,
   reset before each dump, above its RSS just before.
Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from ncebpf.accounting import PeerTable, peer_key  # noqa: E402
from ncebpf.dump import DumpContext, json_document, pieces, render_json, render_perl  # noqa: E402
from ncebpf.dumpfiles import _reporting  # noqa: E402
from ncebpf.filter.frames import ip_frame  # noqa: E402
from ncebpf.peerindex import key_array  # noqa: E402
from tests.netns import NCEBPF, DaemonProcess, NetnsPair, run  # noqa: E402

MIB = 1 << 20
TARGET_S = {"json": 3, "perl": 5}  # design §6, 1 M peers
# Streamed rendering of 1 M peers from the one-object-per-peer table (README, 2026-11-30).
BEFORE_COLUMNS = {"json": "1.4 s", "perl": "1.8 s"}


def rss(pid: int | str = "self", field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int | str = "self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (proc(5))


def synthetic_table(peers: int) -> PeerTable:
    """peers IPv6 peers, each 3 frames in (180 B) and 2 out (150 B), as one drain makes them."""
    table = PeerTable(start=1_000_000)
    keys = b"".join(peer_key(f"fd77:1::{i >> 16:x}:{i & 0xffff:x}") for i in range(peers))
    rows = table.rows_of(key_array(keys), 1_000_001)
    table.count(rows, np.tile(np.array([3, 180, 2, 150], dtype=np.uint64), (peers, 1)),
                1_000_001)
    return table


def render_in_child(peers: int, how: str, fmt: str, out: Path) -> tuple[float, int, int]:
    """(seconds, peak bytes above the table, table bytes) of one rendering, in a child."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        before = rss()
        table = synthetic_table(peers)
        table_bytes = rss() - before
        context = DumpContext("bench", "eth0", "xdp")
        reset_peak()
        base = rss()
        started = time.perf_counter()
        if how == "streamed":
            with out.open("w") as f:
                for text in _reporting(pieces(fmt, table, context, 1_000_100), peers,
                                       lambda done, total: None):
                    f.write(text)
        else:
            text = render_json(json_document(table, context, 1_000_100)) if fmt == "json" \
                else render_perl(table, context, 1_000_100)
            out.write_text(text)
        seconds = time.perf_counter() - started
        peak = rss(field="VmHWM") - base
        os.write(writer, json.dumps([seconds, peak, table_bytes]).encode())
        os._exit(0)
    os.close(writer)
    data = b""
    while chunk := os.read(reader, 4096):
        data += chunk
    os.waitpid(pid, 0)
    seconds, peak, table_bytes = json.loads(data)
    return seconds, peak, table_bytes


def spoofed(pair: NetnsPair, peers: int) -> list[bytes]:
    return [ip_frame(f"fd77:2::{i >> 16:x}:{i & 0xffff:x}", pair.local_v6, "udp", 18)
            for i in range(peers)]


def timed_dump(daemon: DaemonProcess, pid: int) -> tuple[float, int]:
    base = rss(pid)
    reset_peak(pid)
    started = time.monotonic()
    run(*NCEBPF, "dump", "--format", "json", "--output", os.devnull, "--timeout", "60",
        *daemon.args, timeout=600)
    return time.monotonic() - started, rss(pid, "VmHWM") - base


def end_to_end(peers: int, workdir: Path) -> None:
    with NetnsPair(remote_ipv6=True) as pair:
        daemon = DaemonProcess(pair, workdir, "--max-peers", str(peers + 4096),
                               "--interval", "3600")
        pid = daemon.proc.pid  # ip netns exec execs the daemon: the same process
        idle = rss(pid)
        sent = pair.inject_ingress(spoofed(pair, peers), workdir)
        first, first_peak = timed_dump(daemon, pid)
        table = rss(pid) - idle
        second, second_peak = timed_dump(daemon, pid)
        size = (workdir / "state" / "t.json").stat().st_size
        stats_size = (workdir / "state" / "t.stats").stat().st_size
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.communicate(timeout=600)
        final = time.monotonic() - started
        print(f"  {sent:,} new peers counted; JSON {size / MIB:.0f} MiB, .stats "
              f"{stats_size / MIB:.0f} MiB; daemon table {table / MIB:.0f} MiB "
              f"({table / peers:.0f} B/peer)")
        print(f"  `ncebpf dump` right after the flood (drain creates the records): "
              f"{first:6.1f} s, peak {first_peak / MIB:5.0f} MiB above the daemon's RSS")
        print(f"  `ncebpf dump` again (steady drain):                             "
              f"{second:6.1f} s, peak {second_peak / MIB:5.0f} MiB above the daemon's RSS")
        print(f"  SIGTERM to exit: drain, both dump files, detach:               "
              f"{final:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"dump of {args.peers:,} peers, rendering only (child process per figure)")
        for fmt in ("json", "perl"):
            for how in ("streamed", "whole text"):
                seconds, peak, table = render_in_child(args.peers, how, fmt,
                                                       workdir / f"out.{fmt}")
                note = (f"target <= {TARGET_S[fmt]} s; before issue 13 (README): "
                        f"{BEFORE_COLUMNS[fmt]}") if how == "streamed" else \
                    "ncebpf before issue 9"
                print(f"  {fmt:<5} {how:<11} {seconds:6.1f} s, peak {peak / MIB:6.0f} MiB "
                      f"above a table of {table / MIB:4.0f} MiB ({peak / table:.2f}x)   {note}")
        if os.geteuid() != 0:
            print("end to end: needs root (a test namespace and the kernel path)")
            return
        print(f"end to end, `ncebpf attach` counting {args.peers:,} spoofed sources")
        end_to_end(args.peers, workdir)


if __name__ == "__main__":
    main()
