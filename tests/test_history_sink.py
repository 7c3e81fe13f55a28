"""The history's writer thread (ncebpf.history.sink) against a real SQLite file, without
root: the daemon's loop side is driven by hand (observe, tick)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ncebpf.accounting import peer_key
from ncebpf.history import store
from ncebpf.history.sink import HistoryOptions, HistorySink
from ncebpf.peerindex import key_array

SOURCE = store.Source("h1", "t")
KEYS = key_array(peer_key("10.77.1.1"))


def written(url: str) -> dict[int, int]:
    """In packets by bin start, as the database has them."""
    with store.reading(url) as engine, engine.connect() as connection:
        c = store.peer_bins.c
        return {int(start): int(packets) for start, packets in connection.execute(
            store.sa.select(c.bin_start, c.in_packets))}


def sent(sink: HistorySink, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sink.spool.waiting():
        assert time.monotonic() < deadline, "the writer sent nothing"
        time.sleep(0.05)


def test_a_database_file_removed_under_the_writer_is_made_anew(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.db"
    url = f"sqlite:///{path}"
    options = HistoryOptions(url, 10, store.Retention(), 100, tmp_path / "q", SOURCE)
    start = int(time.time()) // 10 * 10 - 60
    with HistorySink(options) as sink:
        sink.observe(KEYS, np.array([[3, 300, 0, 0]], dtype=np.uint64), start + 1)
        sink.tick(start + 10)
        sent(sink)
        assert written(url) == {start: 3}
        for leftover in tmp_path.glob("h.db*"):
            leftover.unlink()  # an operator's rm of the file the writer holds open
        sink.observe(KEYS, np.array([[5, 500, 0, 0]], dtype=np.uint64), start + 11)
        sink.tick(start + 20)
        sent(sink)
        assert path.is_file(), "the bin went into the removed file"
        assert written(url) == {start + 10: 5}
    assert "was removed or replaced while ncebpf wrote to it" in caplog.text
