"""The history's queue of closed bins (ncebpf.history.spool), without root: files in a
real directory, and a directory that stops being one (the disk refuses every write, as a
full or read-only one does)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ncebpf.accounting import peer_key
from ncebpf.history import spool as spool_module
from ncebpf.history.bins import ClosedBin, OpenBin, Retraction
from ncebpf.history.spool import Spool
from ncebpf.peerindex import key_array


def a_bin(start: int, peers: int = 3) -> ClosedBin:
    opened = OpenBin(start, 300)
    keys = key_array(b"".join(peer_key(f"10.77.1.{i + 1}") for i in range(peers)))
    opened.add(keys, np.ones((peers, 4), dtype=np.uint64), start + 1)
    return opened.closed()


def starts(spool: Spool) -> list[int | str]:
    entries = [spool.load(pending) for pending in spool.waiting()]
    return [e.start if isinstance(e, ClosedBin) else f"retract {e.since}" for e in entries]


def refusing(directory: Path) -> None:
    """Every write into directory fails from now on (ENOTDIR), for root too."""
    shutil.rmtree(directory)
    directory.write_text("not a directory")


def test_bins_wait_in_order_and_a_full_queue_drops_the_oldest(tmp_path: Path) -> None:
    queue = Spool(tmp_path / "q", limit=2)
    for start in (0, 300, 600):
        queue.put(a_bin(start))
    assert starts(queue) == [300, 600] and queue.dropped == 1
    assert starts(Spool(tmp_path / "q", limit=2)) == [300, 600]  # a restart finds them


def test_a_bin_the_disk_refuses_is_held_in_memory_in_its_place_and_sent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "q"
    queue = Spool(directory, limit=10)
    queue.put(a_bin(0))
    on_disk = queue.waiting()
    (kept,) = [(p, p.read_bytes()) for p in on_disk if isinstance(p, Path)]
    refusing(directory)
    queue.put(Retraction(0))
    queue.put(a_bin(300))
    assert "held in memory" in caplog.text and caplog.text.count("cannot queue") == 1
    assert queue.held() == 2 and queue.where() == \
        f"in {directory} and memory (2: the disk refuses them)"
    directory.unlink()
    directory.mkdir()
    kept[0].write_bytes(kept[1])  # the file that was there before the disk refused
    assert starts(queue) == [0, "retract 0", 300] and queue.dropped == 0
    for pending in queue.waiting():
        queue.done(pending)
    assert queue.waiting() == []


def test_a_stop_puts_what_memory_holds_on_disk_or_says_it_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "q"
    queue = Spool(directory, limit=10)
    refusing(directory)
    queue.put(a_bin(0))
    queue.put(a_bin(300))
    directory.unlink()
    directory.mkdir()
    queue.keep_held()
    assert starts(Spool(directory, limit=10)) == [0, 300]
    refusing(directory)
    queue.put(a_bin(600))
    queue.keep_held()
    assert queue.dropped == 1 and "the bin of" in caplog.text and "it is lost" in caplog.text


def test_memory_holds_a_bounded_number_of_peers(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "HELD_PEERS_MAX", 5)
    directory = tmp_path / "q"
    queue = Spool(directory, limit=10)
    refusing(directory)
    for start in (0, 300, 600):
        queue.put(a_bin(start, peers=2))
    assert starts(queue) == [300, 600] and queue.dropped == 1
