"""Move counts from a counter source into the peer table, losing nothing. Pure: no I/O.

The kernel's counters are cumulative and a drain never resets them: the
collector remembers the last cumulative value it read for each map entry
and adds only the difference. Reading therefore cannot race with the
programs' increments — whatever a read misses, the next read sees. The only
writes the collector makes are evictions, done with an atomic
lookup-and-delete whose final values are added like any other read, and
only for entries idle long enough (a day, or two intervals when the map is
nearly full) that no packet is in flight for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ncebpf.accounting import PeerTable, Totals

NS = 1_000_000_000


class PeerCounts(NamedTuple):
    """One map entry, summed over CPUs; cumulative since the entry was created."""

    key: bytes
    packets: int
    bytes: int
    first_seen_ns: int  # CLOCK_MONOTONIC
    last_seen_ns: int


class CounterSource(Protocol):
    @property
    def capacity(self) -> int:
        """How many entries the source can hold before new peers overflow."""
        ...

    def read_peers(self) -> Iterable[PeerCounts]: ...

    def read_totals(self) -> Totals: ...

    def evict(self, keys: Sequence[bytes]) -> Iterable[PeerCounts]:
        """Remove these entries; yield the final counts of those that were there."""
        ...


def system_clock() -> tuple[float, int]:
    """(epoch seconds, CLOCK_MONOTONIC ns), read together."""
    return time.time(), time.monotonic_ns()


@dataclass(frozen=True)
class EvictionPolicy:
    idle_s: float = 86400.0  # always evict entries idle this long (upstream purge age)
    high_water: float = 0.9  # when the map is this full ...
    low_water: float = 0.75  # ... evict the longest-idle entries down to this fill
    min_idle_s: float = 10.0  # but never an entry active within this many seconds


@dataclass(frozen=True)
class DrainReport:
    entries: int  # map entries read
    changed: int  # entries whose counts moved since the previous drain
    evicted: int
    seconds: float


class Collector:
    def __init__(self, source: CounterSource, table: PeerTable,
                 policy: EvictionPolicy = EvictionPolicy(),
                 clock: Callable[[], tuple[float, int]] = system_clock) -> None:
        self._source = source
        self._table = table
        self._policy = policy
        self._clock = clock
        # Last cumulative (packets, bytes) read per map entry.
        self._seen: dict[bytes, tuple[int, int]] = {}

    def drain(self) -> DrainReport:
        started = time.perf_counter()
        epoch, now_ns = self._clock()
        offset_s = epoch - now_ns / NS
        idle_ns = now_ns - int(self._policy.idle_s * NS)
        evictable_ns = now_ns - int(self._policy.min_idle_s * NS)
        entries = changed = 0
        stale: list[bytes] = []
        evictable: list[tuple[int, bytes]] = []
        for counts in self._source.read_peers():
            entries += 1
            if self._absorb(counts, offset_s):
                changed += 1
            if counts.last_seen_ns < idle_ns:
                stale.append(counts.key)
            elif counts.last_seen_ns < evictable_ns:
                evictable.append((counts.last_seen_ns, counts.key))

        high = self._policy.high_water * self._source.capacity
        excess = entries - len(stale) - int(self._policy.low_water * self._source.capacity)
        if entries > high and excess > 0:
            evictable.sort()
            stale.extend(key for _, key in evictable[:excess])
        evicted = 0
        if stale:
            for counts in self._source.evict(stale):
                self._absorb(counts, offset_s)
                evicted += 1
            for key in stale:
                self._seen.pop(key, None)

        self._table.totals = self._source.read_totals()
        return DrainReport(entries, changed, evicted, time.perf_counter() - started)

    def _absorb(self, counts: PeerCounts, offset_s: float) -> bool:
        key, packets, nbytes, first_ns, last_ns = counts
        previous = self._seen.get(key)
        if previous is not None and previous[0] <= packets:
            packets_delta, bytes_delta = packets - previous[0], nbytes - previous[1]
            if not (packets_delta or bytes_delta):
                return False
        else:
            packets_delta, bytes_delta = packets, nbytes
        self._seen[key] = (packets, nbytes)
        self._table.add(key, packets_delta, bytes_delta, first_ns / NS + offset_s,
                        last_ns / NS + offset_s)
        return True
