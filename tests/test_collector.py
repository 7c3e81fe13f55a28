"""The collector's delta logic against an in-memory counter source.

The source here is a plain dict with the kernel map's semantics (cumulative
counters, lookup-and-delete); the kernel path itself is covered by the
privileged tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ncebpf.accounting import Others, PeerTable, Totals, peer_key
from ncebpf.collector import NS, Collector, EvictionPolicy, PeerBatch, PeerCounts


class DictSource:
    def __init__(self, capacity: int = 100) -> None:
        self.entries: dict[bytes, PeerCounts] = {}
        self.totals = Totals()
        self._capacity = capacity
        self.evicted: list[bytes] = []

    @property
    def capacity(self) -> int:
        return self._capacity

    def count(self, address: str, packets: int, nbytes: int, now_s: float) -> None:
        key = peer_key(address)
        old = self.entries.get(key)
        now = int(now_s * NS)
        if old is None:
            self.entries[key] = PeerCounts(key, packets, nbytes, now, now)
        else:
            self.entries[key] = PeerCounts(key, old.packets + packets, old.bytes + nbytes,
                                           old.first_seen_ns, now)
        self.totals.packets += packets
        self.totals.bytes += nbytes

    def read_peers(self) -> PeerBatch:
        return PeerBatch.from_counts(list(self.entries.values()))

    def read_totals(self) -> Totals:
        return Totals(**vars(self.totals))

    def evict(self, keys: Sequence[bytes]) -> Iterator[PeerCounts]:
        for key in keys:
            if key in self.entries:
                self.evicted.append(key)
                yield self.entries.pop(key)


class Clock:
    def __init__(self, epoch: float = 1_000_000.0, mono_s: float = 500.0) -> None:
        self.offset = epoch - mono_s
        self.mono_s = mono_s

    def __call__(self) -> tuple[float, int]:
        return self.mono_s + self.offset, int(self.mono_s * NS)


def make(capacity: int = 100, **policy: float) -> tuple[DictSource, PeerTable, Collector, Clock]:
    source, table, clock = DictSource(capacity), PeerTable(start=0), Clock()
    return source, table, Collector(source, table, EvictionPolicy(**policy), clock), clock


def test_repeated_drains_count_nothing_twice() -> None:
    source, table, collector, clock = make()
    source.count("10.77.0.2", 3, 300, clock.mono_s)
    collector.drain()
    collector.drain()
    source.count("10.77.0.2", 4, 400, clock.mono_s)
    report = collector.drain()
    assert report.changed == 1
    assert collector.drain().changed == 0
    record = table.peers[peer_key("10.77.0.2")]
    assert (record.packets, record.bytes) == (7, 700)
    assert table.totals.packets == 7


def test_times_convert_from_monotonic_to_epoch() -> None:
    source, table, collector, clock = make()
    source.count("fd77::2", 1, 90, clock.mono_s - 2)
    collector.drain()
    record = table.peers[peer_key("fd77::2")]
    assert record.E == int(clock.mono_s - 2 + clock.offset)


def test_idle_entries_are_evicted_with_their_last_increments() -> None:
    source, table, collector, clock = make(idle_s=60)
    source.count("10.77.0.3", 2, 200, clock.mono_s)
    collector.drain()
    source.count("10.77.0.3", 5, 500, clock.mono_s)  # lands after the read ...
    clock.mono_s += 120
    report = collector.drain()  # ... and is still counted: eviction reads the final value
    assert report.evicted == 1
    assert source.entries == {}
    assert peer_key("10.77.0.3") not in table.peers  # out of the map, out of the table ...
    assert table.others == Others(peers=1, packets=7, bytes=700)  # ... into others, whole
    source.count("10.77.0.3", 1, 100, clock.mono_s)  # the peer comes back: a fresh entry
    collector.drain()
    assert table.peers[peer_key("10.77.0.3")].packets == 1
    assert table.peers[peer_key("10.77.0.3")].packets + table.others.packets == \
        table.totals.packets == 8


def test_a_nearly_full_map_sheds_its_longest_idle_entries() -> None:
    source, table, collector, clock = make(capacity=10, high_water=0.9, low_water=0.5,
                                           min_idle_s=10)
    for i in range(10):
        source.count(f"10.77.1.{i}", 1, 100, clock.mono_s - 100 + i)
    source.count("10.77.1.99", 1, 100, clock.mono_s)  # active: never evicted early
    report = collector.drain()
    assert report.evicted == 6  # 11 entries down to 5
    assert source.evicted == [peer_key(f"10.77.1.{i}") for i in range(6)]
    assert peer_key("10.77.1.99") in source.entries
    assert len(table.peers) == 5 and table.others.peers == 6
    assert sum(r.packets for r in table.peers.values()) + table.others.packets == 11


def test_the_table_is_bounded_as_the_map_is_through_waves_of_new_peers() -> None:
    """Issue 9.6: four waves of spoofed sources against a small map; the table never
    holds more peers than the map, and peers + others + overflow add up to the totals."""
    capacity = 100
    source, table, collector, clock = make(capacity=capacity, min_idle_s=10)
    overflow = 0
    for wave in range(4):
        for i in range(520):
            if len(source.entries) < capacity:
                source.count(f"fd77::{wave:x}:{i:x}", 1, 60, clock.mono_s)
            else:
                overflow += 1
        collector.drain()
        assert len(table.peers) <= capacity
        clock.mono_s += 11  # the wave's sources fall idle
        collector.drain()
        assert len(table.peers) <= capacity
        listed = sum(r.packets for r in table.peers.values())
        assert listed + table.others.packets == table.totals.packets
    assert table.totals.packets + overflow == 4 * 520
    assert table.others.peers > 0


def test_nothing_is_evicted_below_the_high_water_mark() -> None:
    source, table, collector, clock = make(capacity=100, min_idle_s=1)
    for i in range(50):
        source.count(f"10.77.2.{i}", 1, 1, clock.mono_s - 50)
    assert collector.drain().evicted == 0
