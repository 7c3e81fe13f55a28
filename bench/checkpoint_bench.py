"""Checkpoint write and read of a table of 1 M peers (issue 13, items 1 and 2): prints
seconds and file size; never passes or fails on time. Usage: checkpoint_bench.py [PEERS] [DIR]"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ncebpf.accounting import PeerTable
from ncebpf.checkpoint import CheckpointInfo, load, save
from ncebpf.collector import PeerBatch


def table_of(peers: int) -> PeerTable:
    """A table as one first drain of `peers` new IPv6 peers leaves it."""
    table = PeerTable(start=1_000_000, track_created=False)
    tails = (np.arange(peers, dtype=np.uint64) + 1).astype(">u8")
    keys = np.zeros((peers, 20), dtype=np.uint8)
    keys[:, 0], keys[:, 4], keys[:, 5] = 6, 0xFD, 0x77
    keys[:, 12:] = tails.view(np.uint8).reshape(peers, 8)
    batch = PeerBatch(keys.tobytes(), np.full((peers, 4), 7, dtype=np.uint64))
    rows = table.rows_of(batch.key_column(), 1_000_000)
    table.source[rows] = batch.counts
    table.count(rows, batch.counts, 1_000_000)
    return table


def main() -> None:
    peers = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    directory = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.gettempdir())
    table = table_of(peers)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        path = Path(scratch) / "bench.checkpoint"
        info = CheckpointInfo(time.time(), "bench", "bench", "tc")
        writes = [save(path, table, info) for _ in range(3)]
        started = time.perf_counter()
        load(path)
        read = time.perf_counter() - started
        size = path.stat().st_size
    print(f"checkpoint of {peers:,} peers in {directory}: {size / 1e6:.0f} MB "
          f"({size / peers:.0f} B a peer); write incl. fsync min {min(writes):.2f} s, "
          f"max {max(writes):.2f} s; read {read:.2f} s")


if __name__ == "__main__":
    main()
