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
    """In packets by start of the 10-s bins, as the database has them (an hour that ended
    while the test ran is summed into an hourly bin too: not looked at here)."""
    with store.reading(url) as engine, engine.connect() as connection:
        c = store.peer_bins.c
        return {int(start): int(packets) for start, packets in connection.execute(
            store.sa.select(c.bin_start, c.in_packets).where(c.bin_seconds == 10))}


def sent(sink: HistorySink, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sink.spool.waiting():
        assert time.monotonic() < deadline, "the writer sent nothing"
        time.sleep(0.05)


def a_sink(url: str, spool: Path) -> HistorySink:
    """A sink of 10-s bins; write_bin's own clock decides retention, so bins are recent."""
    return HistorySink(HistoryOptions(url, 10, store.Retention(), 100, spool, SOURCE))


def count_bin(sink: HistorySink, start: int, packets: int) -> None:
    """The loop's side: a drain counts packets in the bin at start, the next closes it."""
    sink.observe(KEYS, np.array([[packets, 100 * packets, 0, 0]], dtype=np.uint64), start + 1)
    sink.tick(start + 10)


@pytest.fixture
def start() -> int:
    """A bin a minute ago, taken when the test runs (not when the module is imported:
    CI imports it twenty minutes before it runs it)."""
    return int(time.time()) // 10 * 10 - 60


def test_a_database_file_removed_under_the_writer_is_made_anew(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, start: int) -> None:
    path = tmp_path / "h.db"
    url = f"sqlite:///{path}"
    with a_sink(url, tmp_path / "q") as sink:
        count_bin(sink, start, 3)
        sent(sink)
        assert written(url) == {start: 3}
        for leftover in tmp_path.glob("h.db*"):
            leftover.unlink()  # an operator's rm of the file the writer holds open
        count_bin(sink, start + 10, 5)
        sent(sink)
        assert path.is_file(), "the bin went into the removed file"
        assert written(url) == {start + 10: 5}
    assert "was removed or replaced while ncebpf wrote to it" in caplog.text


def test_a_stop_during_the_back_off_tries_the_database_once_more(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, start: int) -> None:
    """The database came back while the writer waited to try again: a stop sends the
    bins instead of leaving them for a next run that may never come."""
    directory = tmp_path / "gone"  # no directory: SQLite cannot open the file
    url = f"sqlite:///{directory / 'h.db'}"
    with a_sink(url, tmp_path / "q") as sink:
        count_bin(sink, start, 3)
        deadline = time.monotonic() + 30
        while "cannot write to" not in caplog.text:
            assert time.monotonic() < deadline, "the writer never tried"
            time.sleep(0.05)
        directory.mkdir()  # back; the writer waits 5 s before it tries again
        began = time.monotonic()
    assert time.monotonic() - began < 4, "the stop waited for the back-off"
    assert not sink.spool.waiting()
    assert written(url) == {start: 3}
