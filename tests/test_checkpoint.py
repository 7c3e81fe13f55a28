"""Checkpoints of the peer table: round trips, continuity of deltas, and a writer killed
mid-write (issue 13, items 1 and 2). No root needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncebpf.accounting import PeerTable, peer_key
from ncebpf.checkpoint import CheckpointError, CheckpointInfo, load, rebase, save, scratch_files
from ncebpf.collector import Collector, EvictionPolicy
from tests.test_collector import DictSource

INFO = CheckpointInfo(written_at=1_000_000.0, dataset="ab12", digest="cd34", mode="tc")
ADDRESSES = [f"10.77.{i // 250}.{i % 250 + 1}" for i in range(40)] + \
    [f"fd77::{i:x}" for i in range(1, 20)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def state_of(table: PeerTable) -> dict[str, object]:
    """Everything a dump shows, plus the source memory and totals base the deltas use."""
    snap = table.snapshot()
    rows = table.listed_rows()
    known = table.index.live_rows()
    return {
        "start": snap.start, "rates": snap.rates, "others": snap.others, "totals": snap.totals,
        "keys": snap.keys.tolist(), "B": snap.B.tolist(), "C": snap.C.tolist(),
        "E": snap.E.tolist(), "R": snap.R.tolist(), "T": snap.T.tolist(),
        "W": snap.W.tolist(), "counts": snap.counts.tolist(), "names": snap.names,
        "source": sorted((table.index.keys[r].tobytes(), table.source[r].tolist(),
                          int(table.last_seen[r])) for r in known.tolist()),
        "first_seen": sorted(int(table.first_seen[r]) for r in rows.tolist()),
        "source_totals": table._source_totals, "totals_base": table._totals_base,
    }


operations = st.lists(st.one_of(
    st.tuples(st.just("count"), st.sampled_from(ADDRESSES), st.integers(1, 9),
              st.integers(40, 1500), st.booleans()),
    st.tuples(st.just("drain"), st.integers(1, 400)),
    st.tuples(st.just("purge"), st.integers(0, 90_000)),
    st.tuples(st.just("reset")),
    st.tuples(st.just("name"), st.sampled_from(ADDRESSES)),
), max_size=60)


def run(ops: list[tuple[object, ...]], source: DictSource, table: PeerTable,
        collector: Collector, clock: Clock) -> None:
    for op in ops:
        if op[0] == "count":
            _, address, packets, size, out = op
            source.count(str(address), int(packets), int(packets) * int(size), bool(out))  # type: ignore[call-overload]
        elif op[0] == "drain":
            clock.now += int(op[1])  # type: ignore[call-overload]
            collector.drain()
        elif op[0] == "purge":
            clock.now += int(op[1])  # type: ignore[call-overload]
            table.purge(int(clock.now))
        elif op[0] == "reset":
            table.reset(int(clock.now))
        elif op[0] == "name":
            from ncebpf.accounting import peer_key
            key = peer_key(str(op[1]))
            if key in table.peers:
                table.peers[key].N = (f"host-{op[1]}.example",)
                table.peers[key].T = int(clock.now) + 3600


@settings(max_examples=60, deadline=None)
@given(before=operations, after=operations)
def test_a_table_from_its_checkpoint_goes_on_as_the_original(
        tmp_path_factory: pytest.TempPathFactory, before: list[tuple[object, ...]],
        after: list[tuple[object, ...]]) -> None:
    """Save at any point, load, and feed both tables the same later counts: equal states,
    so the loaded table's deltas against the saved source values are exact."""
    path = tmp_path_factory.mktemp("cp") / "t.checkpoint"
    source, clock = DictSource(capacity=1000), Clock()
    table = PeerTable(start=int(clock.now))
    policy = EvictionPolicy(idle_s=50_000)
    collector = Collector(source, table, policy, clock)
    run(before, source, table, collector, clock)
    save(path, table, INFO)
    loaded = load(path)
    assert loaded is not None
    copy, info = loaded
    assert info == INFO
    assert state_of(copy) == state_of(table)
    # Both continue from the same source: the copy through a new collector, as a new daemon.
    copy_clock = Clock()
    copy_clock.now = clock.now
    # Its own copy of the source: evictions take entries out of the one they drain.
    copy_source = deepcopy(source)
    copy_collector = Collector(copy_source, copy, policy, copy_clock)
    for op in after:
        if op[0] == "count":
            _, address, packets, size, out = op
            for s in (source, copy_source):
                s.count(str(address), int(packets), int(packets) * int(size), bool(out))  # type: ignore[call-overload]
            continue
        if op[0] == "drain":
            clock.now += int(op[1])  # type: ignore[call-overload]
            copy_clock.now = clock.now
            collector.drain()
            copy_collector.drain()
        else:  # purge, reset, name: the table's own, at the same time for both
            if op[0] == "purge":
                clock.now += int(op[1])  # type: ignore[call-overload]
                copy_clock.now = clock.now
                op = ("purge", 0)
            for t in (table, copy):
                run([op], DictSource(), t, collector, clock)
    clock.now += 1
    copy_clock.now = clock.now
    collector.drain()
    copy_collector.drain()
    assert state_of(copy) == state_of(table)


def test_rebase_counts_a_new_source_from_zero_and_keeps_totals_continuous(tmp_path: Path) -> None:
    """After a reboot the maps are new: everything they hold counts, totals go on."""
    source, clock = DictSource(), Clock()
    table = PeerTable(start=int(clock.now))
    collector = Collector(source, table, clock=clock)
    source.count("10.77.0.2", 1000, 64_000)
    source.count("10.77.0.3", 7, 700, out=True)
    clock.now += 5
    collector.drain()
    save(tmp_path / "c", table, INFO)
    loaded = load(tmp_path / "c")
    assert loaded is not None
    copy = loaded[0]
    rebase(copy)
    fresh = DictSource()  # the maps after a reboot: empty
    fresh.count("10.77.0.2", 3, 300)
    clock.now += 5
    Collector(fresh, copy, clock=clock).drain()
    from ncebpf.accounting import peer_key
    assert copy.peers[peer_key("10.77.0.2")].packets == 1003
    assert copy.peers[peer_key("10.77.0.3")].out_packets == 7
    assert (copy.totals.packets, copy.totals.bytes) == (1010, 64_000 + 700 + 300)
    assert copy.totals.out_packets == 7


def test_no_checkpoint_is_none_and_a_damaged_one_says_so(tmp_path: Path) -> None:
    assert load(tmp_path / "absent") is None
    (tmp_path / "bad").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="unreadable"):
        load(tmp_path / "bad")


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from ncebpf.accounting import PeerTable, peer_key
from ncebpf.checkpoint import CheckpointInfo, save
from ncebpf.collector import PeerBatch
n = int(sys.argv[2])
table = PeerTable(start=1_000_000)
keys = (np.arange(n, dtype=np.uint64) + 1).astype('>u8').tobytes()
keys = b''.join(b'\\x06\\0\\0\\0' + b'\\xfd\\x77' + bytes(6) + keys[8*i:8*i+8] for i in range(n))
batch = PeerBatch(keys, np.ones((n, 4), dtype=np.uint64))
generation = 0
rows = table.rows_of(batch.key_column(), 1_000_000)
while True:
    generation += 1
    table.source[rows] = generation
    save(Path(sys.argv[1]), table, CheckpointInfo(float(generation), 'x', 'y', 'tc'))
    print(generation, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint_readable(tmp_path: Path
                                                                            ) -> None:
    """SIGKILL a process that writes checkpoints of 200 000 peers back to back, at several
    moments: the file is always a whole checkpoint (one generation in every row)."""
    path = tmp_path / "t.checkpoint"
    for delay in (0.05, 0.3, 0.7, 1.1):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "200000"],
                                  stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        assert writer.stdout is not None
        writer.stdout.readline()  # one checkpoint is complete
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = load(path)
        assert loaded is not None
        table, info = loaded
        generation = int(info.written_at)
        assert generation >= 1
        assert len(table.index) == 200_000
        assert np.all(table.source[table.index.live_rows()] == generation)
        for scratch in scratch_files(path):
            scratch.unlink()


class Killed(BaseException):
    """The daemon's death (kill -9) at a chosen point of a drain."""


FLOOD = EvictionPolicy(high_water=0.9, low_water=0.5, min_idle_s=10)


def evicting_drain(tmp_path: Path, die_before_delete: bool
                   ) -> tuple[DictSource, Path, dict[str, int], int]:
    """Ten peers, then a flood that fills the map so a drain evicts the idle ones; the
    daemon checkpoints in before_evict and dies either there (before any delete) or right
    after the drain (after the deletes, before any later checkpoint).

    Returns the source as the new daemon finds it, the checkpoint, the packets sent per
    peer and the packets counted between the drain's read and its delete (`late`)."""
    path = tmp_path / "t.checkpoint"
    source, clock = DictSource(capacity=20), Clock()
    table = PeerTable(start=int(clock.now))
    seen_at_checkpoint: list[set[bytes]] = []

    def checkpoint_first() -> None:
        save(path, table, INFO)
        seen_at_checkpoint.append(set(source.entries))
        if die_before_delete:
            raise Killed

    collector = Collector(source, table, FLOOD, clock, before_evict=checkpoint_first)
    sent: dict[str, int] = {}

    def send(address: str, packets: int) -> None:
        source.count(address, packets, packets * 100)
        sent[address] = sent.get(address, 0) + packets

    for i in range(10):
        send(f"10.77.0.{i + 1}", i + 2)
    collector.drain()
    save(path, table, INFO)  # the regular checkpoint before the flood
    clock.now += 30
    for i in range(10):  # idle peers send more after that checkpoint, then go quiet
        send(f"10.77.0.{i + 1}", 3)
    clock.now += 1
    collector.drain()
    clock.now += 30
    for i in range(9):  # the flood: the map is 95% full
        send(f"10.77.1.{i + 1}", 1)
    if not die_before_delete:
        source.late = [("10.77.0.4", 5, 500)]  # lands between the read and the delete
    clock.now += 1
    try:
        report = collector.drain()
        assert report.evicted > 0
    except Killed:
        pass
    assert seen_at_checkpoint, "the drain evicted nothing"
    # The checkpoint was written while every entry to be evicted was still in the source.
    assert {peer_key(f"10.77.0.{i + 1}") for i in range(10)} <= seen_at_checkpoint[0]
    return source, path, sent, 0 if die_before_delete else 5


@pytest.mark.parametrize("die_before_delete", [True, False])
def test_a_kill_during_an_eviction_loses_no_count_but_what_landed_during_it(
        tmp_path: Path, die_before_delete: bool) -> None:
    source, path, sent, late = evicting_drain(tmp_path, die_before_delete)
    loaded = load(path)
    assert loaded is not None
    table = loaded[0]
    assert len(table.evicting) > 0  # the checkpoint says what was being evicted
    clock = Clock()
    clock.now += 100
    # The new daemon's first drain, evicting nothing of its own.
    Collector(source, table, EvictionPolicy(high_water=1.0), clock).drain()
    assert len(table.evicting) == 0
    counted = {address: table.peers[peer_key(address)].packets for address in sent
               if peer_key(address) in table.peers}
    gone = set(sent) - set(counted)
    # Still in the source (never deleted): exact, and once. Deleted: in `others`, exact.
    assert counted == {a: n for a, n in sent.items() if a not in gone}
    assert table.others.packets == sum(sent[a] for a in gone)
    assert bool(gone) != die_before_delete
    # Conservation: the kernel's totals count the late frames; the table lost only them.
    assert sum(counted.values()) + table.others.packets == table.totals.packets - late
    assert table.totals.packets == sum(sent.values()) + late
