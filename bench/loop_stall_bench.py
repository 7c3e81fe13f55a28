"""How long the daemon's loop stops while a large dump is written (issue 13 item 4).

    nice -n 19 .venv/bin/python bench/loop_stall_bench.py [--peers 1000000]

A synthetic table of N peers in the order a drain of a hashed map lists them
(shuffled keys), both dump files (JSON and Perl) into a temporary directory.

- before (the loop wrote the dump itself, up to 804d5cf): the loop is stopped for
  the whole dump, then for the checkpoint's write and fsync;
- after: the loop takes the snapshot (copies of the listed rows' columns) and the
  worker thread sorts and writes it; once written, the loop copies the checkpoint
  for the worker. The loop turns every TICK_S (a select with that timeout); the
  figure is the longest time between two turns beyond TICK_S, with the loop's
  own work in its longest turn beside it (the rest is the wait for the
  interpreter lock, which the worker's Python code holds most of the time).

Figures only; never fails on time.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from ncebpf import checkpoint  # noqa: E402
from ncebpf.accounting import PeerTable, peer_key  # noqa: E402
from ncebpf.config import Instance  # noqa: E402
from ncebpf.dump import DumpContext  # noqa: E402
from ncebpf.dumpfiles import DumpWriter  # noqa: E402
from ncebpf.outputs import Checkpointer, DumpService  # noqa: E402
from ncebpf.peerindex import key_array  # noqa: E402
from ncebpf.worker import Worker  # noqa: E402

TICK_S = 0.01


def shuffled_table(peers: int, seed: int = 13) -> PeerTable:
    """peers IPv6 peers (3 frames in, 2 out each), rows in a random key order."""
    order = np.random.default_rng(seed).permutation(peers).tolist()
    table = PeerTable(start=1_000_000)
    keys = b"".join(peer_key(f"fd77:1::{i >> 16:x}:{i & 0xffff:x}") for i in order)
    rows = table.rows_of(key_array(keys), 1_000_001)
    table.count(rows, np.tile(np.array([3, 180, 2, 150], dtype=np.uint64), (peers, 1)),
                1_000_001)
    return table


def info(at: float) -> checkpoint.CheckpointInfo:
    return checkpoint.CheckpointInfo(at, "bench", "bench", "xdp")


def before(table: PeerTable, instance: Instance, writer: DumpWriter) -> tuple[float, float]:
    """(seconds of the dump, seconds of the checkpoint) written on the loop's thread."""
    started = time.perf_counter()
    writer.write(table, time.time(), lambda done, total: None)
    dump = time.perf_counter() - started
    started = time.perf_counter()
    checkpoint.save(instance.statedir / "t.checkpoint", table, info(time.time()))
    return dump, time.perf_counter() - started


def after(table: PeerTable, instance: Instance, writer: DumpWriter
          ) -> tuple[float, float, float, float, int]:
    """(longest stall, longest turn, the first turn (the snapshot), seconds to everything
    written, turns) of a loop
    that asks for one dump and turns every TICK_S until the dump and the checkpoint
    after it are written. A stall is the time between two turns beyond TICK_S."""
    with Worker() as worker:
        checkpoints = Checkpointer(worker, table, instance.statedir / "t.checkpoint", info,
                                   0o600, 3600.0)
        dumps = DumpService(writer, worker, table, lambda: None, after=checkpoints.save)
        dumps.ask()
        began = previous = time.perf_counter()
        longest_stall = longest_turn = first_turn = 0.0
        turns = 0
        while True:
            worker.collect()
            dumps.service(time.monotonic())
            done = time.perf_counter()
            longest_turn = max(longest_turn, done - previous)
            first_turn = first_turn or done - previous
            turns += 1
            if not worker.busy and not dumps.writing:
                return (max(longest_stall, longest_turn), longest_turn, first_turn,
                        done - began, turns)
            select.select([worker.fileno()], [], [], TICK_S)
            woke = time.perf_counter()
            # Beyond the tick asked for: the loop's own work, and the wait for the
            # interpreter lock after select returned.
            longest_stall = max(longest_stall, woke - previous - TICK_S)
            previous = woke


def parts(table: PeerTable) -> dict[str, float]:
    """Each piece's own time: what the loop does, and what the worker does now."""
    figures = {}
    started = time.perf_counter()
    snapshot = table.snapshot_unordered()
    figures["snapshot (loop)"] = time.perf_counter() - started
    started = time.perf_counter()
    snapshot.in_key_order()
    figures["key-order sort (worker)"] = time.perf_counter() - started
    started = time.perf_counter()
    checkpoint.copied_arrays(table, info(time.time()))
    figures["checkpoint copy (loop)"] = time.perf_counter() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1_000_000)
    args = parser.parse_args()
    table = shuffled_table(args.peers)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        instance = Instance("t", Path(tmp), Path(tmp))
        writer = DumpWriter(instance, DumpContext("t", "eth0", "xdp"))
        print(f"the loop while a dump of {args.peers:,} peers (JSON + .stats) is written")
        for name, seconds in parts(table).items():
            print(f"  {name:<28} {seconds * 1000:8.0f} ms")
        dump_s, checkpoint_s = before(table, instance, writer)
        print(f"  before: the loop stopped for the dump {dump_s:6.2f} s, then for the "
              f"checkpoint {checkpoint_s:5.2f} s")
        stall, turn, first, total, turns = after(table, instance, writer)
        print(f"  after:  longest stall {stall * 1000:6.0f} ms (the loop's own work: longest "
              f"turn {turn * 1000:.0f} ms, the snapshot's turn {first * 1000:.0f} ms); "
              f"{turns} turns while both were written in {total:.2f} s")


if __name__ == "__main__":
    main()
