"""The collector's delta logic against an in-memory counter source.

The source here is a plain dict with the kernel map's semantics (cumulative
counters, lookup-and-delete); the kernel path itself is covered by the
privileged tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ncebpf.accounting import Others, PeerTable, Totals, peer_key
from ncebpf.collector import Collector, EvictionPolicy, PeerBatch, PeerCounts


class DictSource:
    def __init__(self, capacity: int = 100) -> None:
        self.entries: dict[bytes, PeerCounts] = {}
        self.totals = Totals()
        self._capacity = capacity
        self.evicted: list[bytes] = []
        # Counted between a drain's read and its eviction (a packet in flight).
        self.late: list[tuple[str, int, int]] = []

    @property
    def capacity(self) -> int:
        return self._capacity

    def count(self, address: str, packets: int, nbytes: int, out: bool = False) -> None:
        key = peer_key(address)
        old = self.entries.get(key, PeerCounts(key, 0, 0, 0, 0))
        if out:
            self.entries[key] = old._replace(out_packets=old.out_packets + packets,
                                             out_bytes=old.out_bytes + nbytes)
            self.totals.out_packets += packets
            self.totals.out_bytes += nbytes
        else:
            self.entries[key] = old._replace(in_packets=old.in_packets + packets,
                                             in_bytes=old.in_bytes + nbytes)
        self.totals.packets += packets
        self.totals.bytes += nbytes

    def read_peers(self) -> PeerBatch:
        return PeerBatch.from_counts(list(self.entries.values()))

    def read_totals(self) -> Totals:
        return Totals(**vars(self.totals))

    def evict(self, keys: Sequence[bytes]) -> Iterator[PeerCounts]:
        for address, packets, nbytes in self.late:
            self.count(address, packets, nbytes)
        self.late = []
        for key in keys:
            if key in self.entries:
                self.evicted.append(key)
                yield self.entries.pop(key)


class Clock:
    def __init__(self, epoch: float = 1_000_000.0) -> None:
        self.epoch = epoch

    def __call__(self) -> float:
        return self.epoch


def make(capacity: int = 100, **policy: float) -> tuple[DictSource, PeerTable, Collector, Clock]:
    source, table, clock = DictSource(capacity), PeerTable(start=0), Clock()
    return source, table, Collector(source, table, EvictionPolicy(**policy), clock), clock


def test_repeated_drains_count_nothing_twice() -> None:
    source, table, collector, clock = make()
    source.count("10.77.0.2", 3, 300)
    collector.drain()
    collector.drain()
    source.count("10.77.0.2", 4, 400)
    report = collector.drain()
    assert report.changed == 1
    assert collector.drain().changed == 0
    record = table.peers[peer_key("10.77.0.2")]
    assert (record.packets, record.bytes) == (7, 700)
    assert table.totals.packets == 7


def test_times_are_the_drains() -> None:
    """The kernel keeps no time stamps (issue 13 item 3): a peer is created at the drain
    that first sees it, and last seen at the last drain that saw its counters move."""
    source, table, collector, clock = make()
    source.count("fd77::2", 1, 90)
    collector.drain()
    record = table.peers[peer_key("fd77::2")]
    assert record.E == record.first_seen == record.last_seen == int(clock.epoch)
    clock.epoch += 7
    collector.drain()
    assert record.last_seen == int(clock.epoch) - 7
    source.count("fd77::2", 1, 90)
    collector.drain()
    assert (record.E, record.first_seen, record.last_seen) == (int(clock.epoch) - 7,
                                                               int(clock.epoch) - 7,
                                                               int(clock.epoch))


def test_a_drain_reports_when_it_read_the_peers_not_when_it_ended() -> None:
    """The counts' time is the middle of the read of the peers: a sink that runs after a
    slow eviction or other sinks gets the moment the maps were read (top's rates)."""
    _, table, _, clock = make()

    class SlowRead(DictSource):
        def read_peers(self) -> PeerBatch:
            clock.epoch += 0.4  # a read of many peers
            return super().read_peers()
    slow = SlowRead()
    collector = Collector(slow, table, EvictionPolicy(), clock)
    slow.count("10.77.0.2", 1, 100)
    seen: list[float] = []
    collector.sinks.append(lambda report: seen.append(report.read_at))

    def late_sink(report: object) -> None:
        clock.epoch += 5.0  # a sink that takes its time
    collector.sinks.insert(0, late_sink)
    start = clock.epoch
    report = collector.drain()
    assert report.read_at == seen[0] == start + 0.2
    assert clock.epoch == start + 5.4


def test_in_and_out_are_counted_apart() -> None:
    source, table, collector, clock = make()
    source.count("10.77.0.2", 3, 300)
    source.count("10.77.0.2", 5, 700, out=True)
    collector.drain()
    source.count("10.77.0.2", 2, 80, out=True)
    collector.drain()
    record = table.peers[peer_key("10.77.0.2")]
    assert (record.in_packets, record.in_bytes, record.out_packets, record.out_bytes) == \
        (3, 300, 7, 780)
    assert (record.packets, record.bytes) == (10, 1080)
    totals = table.totals
    assert (totals.in_packets, totals.in_bytes, totals.out_packets, totals.out_bytes) == \
        (3, 300, 7, 780)


class StrayFrameSource(DictSource):
    """A frame counted under its peer just after the peers were read, and in the totals
    before they are (the program counts the peer first, then the totals)."""

    def __init__(self, strays: int) -> None:
        super().__init__()
        self.strays = strays
        self.reads = 0

    def read_peers(self) -> PeerBatch:
        self.reads += 1
        batch = super().read_peers()
        if self.strays:
            self.strays -= 1
            self.count("::", 1, 90)
        return batch


def test_peers_and_totals_agree_when_a_stray_frame_lands_between_their_reads() -> None:
    source = StrayFrameSource(strays=1)
    table = PeerTable(start=0)
    collector = Collector(source, table, clock=Clock())
    source.count("10.77.0.2", 3, 300)
    collector.drain()
    assert source.reads == 2
    assert table.totals.packets == sum(r.packets for r in table.peers.values()) == 4
    assert table.totals.bytes == sum(r.bytes for r in table.peers.values()) == 390


def test_steady_traffic_gives_up_on_agreement_and_the_next_drain_counts_the_rest() -> None:
    source = StrayFrameSource(strays=100)
    table = PeerTable(start=0)
    collector = Collector(source, table, clock=Clock())
    collector.drain()
    assert source.reads == 3
    assert table.totals.packets == sum(r.packets for r in table.peers.values()) + 1
    source.strays = 0
    collector.drain()
    assert table.totals.packets == sum(r.packets for r in table.peers.values()) == 3


def test_idle_entries_are_evicted_with_their_last_increments() -> None:
    source, table, collector, clock = make(idle_s=60)
    source.count("10.77.0.3", 2, 200)
    collector.drain()
    clock.epoch += 120
    source.late.append(("10.77.0.3", 5, 500))  # lands after the read ...
    report = collector.drain()  # ... and is still counted: eviction reads the final value
    assert report.evicted == 1
    assert source.entries == {}
    assert peer_key("10.77.0.3") not in table.peers  # out of the map, out of the table ...
    assert table.others == Others(peers=1, packets=7, bytes=700)  # ... into others, whole
    source.count("10.77.0.3", 1, 100)  # the peer comes back: a fresh entry
    collector.drain()
    assert table.peers[peer_key("10.77.0.3")].packets == 1
    assert table.peers[peer_key("10.77.0.3")].packets + table.others.packets == \
        table.totals.packets == 8


def test_a_nearly_full_map_sheds_its_longest_idle_entries() -> None:
    source, table, collector, clock = make(capacity=10, high_water=0.9, low_water=0.5,
                                           min_idle_s=10)
    for i in range(10):
        source.count(f"10.77.1.{i}", 1, 100)
        collector.drain()  # seen at drains a second apart: 10.77.1.0 has been idle longest
        clock.epoch += 1
    clock.epoch += 100
    source.count("10.77.1.99", 1, 100)  # active: never evicted early
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
                source.count(f"fd77::{wave:x}:{i:x}", 1, 60)
            else:
                overflow += 1
        collector.drain()
        assert len(table.peers) <= capacity
        clock.epoch += 11  # the wave's sources fall idle
        collector.drain()
        assert len(table.peers) <= capacity
        listed = sum(r.packets for r in table.peers.values())
        assert listed + table.others.packets == table.totals.packets
    assert table.totals.packets + overflow == 4 * 520
    assert table.others.peers > 0


def test_nothing_is_evicted_below_the_high_water_mark() -> None:
    source, table, collector, clock = make(capacity=100, min_idle_s=1)
    for i in range(50):
        source.count(f"10.77.2.{i}", 1, 1)
    collector.drain()
    clock.epoch += 50
    assert collector.drain().evicted == 0
