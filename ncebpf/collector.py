"""Move counts from a counter source into the peer table, losing nothing. Pure: no I/O.

The kernel's counters are cumulative and a drain never resets them: the
collector remembers the last cumulative value it read for each map entry
and adds only the difference. Reading therefore cannot race with the
programs' increments — whatever a read misses, the next read sees. The only
writes the collector makes are evictions, done with an atomic
lookup-and-delete whose final values are added like any other read, and
only for entries idle long enough (a day, or `min_idle_s` when the map is
nearly full) that no packet is in flight for them.

A source reads whole maps as a PeerBatch of columns; the collector touches
in Python only the rows the source could not rule out as unchanged, so a
drain over a million idle peers costs little more than the kernel read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import KEY_SIZE, PeerTable, Totals, gc_paused

NS = 1_000_000_000


class PeerCounts(NamedTuple):
    """One map entry, summed over CPUs; cumulative since the entry was created."""

    key: bytes
    packets: int
    bytes: int
    first_seen_ns: int  # CLOCK_MONOTONIC
    last_seen_ns: int


@dataclass(frozen=True)
class PeerBatch:
    """A whole map read at once, as columns; row i's key is keys[KEY_SIZE i:KEY_SIZE (i + 1)]."""

    keys: bytes
    packets: npt.NDArray[np.uint64]  # cumulative, summed over CPUs
    bytes: npt.NDArray[np.uint64]
    first_seen_ns: npt.NDArray[np.int64]  # CLOCK_MONOTONIC
    last_seen_ns: npt.NDArray[np.int64]
    # False where the source can prove the row did not move since its previous read.
    maybe_changed: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.packets)

    def key_column(self) -> npt.NDArray[np.void]:
        """The keys as one array; its .tolist() gives KEY_SIZE-byte bytes objects."""
        return np.frombuffer(self.keys, dtype=f"V{KEY_SIZE}")

    @classmethod
    def from_counts(cls, rows: Sequence[PeerCounts]) -> PeerBatch:
        return cls(
            keys=b"".join(r.key for r in rows),
            packets=np.array([r.packets for r in rows], dtype=np.uint64),
            bytes=np.array([r.bytes for r in rows], dtype=np.uint64),
            first_seen_ns=np.array([r.first_seen_ns for r in rows], dtype=np.int64),
            last_seen_ns=np.array([r.last_seen_ns for r in rows], dtype=np.int64),
            maybe_changed=np.ones(len(rows), dtype=np.bool_),
        )


class CounterSource(Protocol):
    @property
    def capacity(self) -> int:
        """How many entries the source can hold before new peers overflow."""
        ...

    def read_peers(self) -> PeerBatch: ...

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
        batch = self._source.read_peers()
        totals_before = self._table.totals
        changed = self._absorb_batch(batch, offset_s)
        stale = self._eviction_candidates(batch, now_ns)
        evicted = 0
        for counts in self._source.evict(stale):
            key, packets, nbytes, first_ns, last_ns = counts
            self._absorb(key, packets, nbytes, first_ns / NS + offset_s, last_ns / NS + offset_s)
            evicted += 1
        for key in stale:
            self._seen.pop(key, None)
        # Out of the map, out of the table: the daemon is bounded as the map is.
        self._table.retire(stale)
        self._table.totals = self._source.read_totals()
        # The global rates take the drain as one batch, as the peers take theirs.
        grown = self._table.totals
        self._table.rates.add(grown.packets - totals_before.packets,
                              grown.bytes - totals_before.bytes, int(epoch))
        return DrainReport(len(batch), changed, evicted, time.perf_counter() - started)

    def _absorb_batch(self, batch: PeerBatch, offset_s: float) -> int:
        with gc_paused():
            return self._absorb_rows(batch, offset_s)

    def _absorb_rows(self, batch: PeerBatch, offset_s: float) -> int:
        rows = np.flatnonzero(batch.maybe_changed)
        columns = (batch.key_column()[rows].tolist(), batch.packets[rows].tolist(),
                   batch.bytes[rows].tolist(),
                   (batch.first_seen_ns[rows] / NS + offset_s).tolist(),
                   (batch.last_seen_ns[rows] / NS + offset_s).tolist())
        return sum(self._absorb(*row) for row in zip(*columns, strict=True))

    def _absorb(self, key: bytes, packets: int, nbytes: int, first_s: float,
                last_s: float) -> bool:
        previous = self._seen.get(key)
        if previous is not None and previous[0] <= packets:
            packets_delta, bytes_delta = packets - previous[0], nbytes - previous[1]
            if not (packets_delta or bytes_delta):
                return False
        else:
            packets_delta, bytes_delta = packets, nbytes
        self._seen[key] = (packets, nbytes)
        self._table.add_peer(key, packets_delta, bytes_delta, first_s, last_s)
        return True

    def _eviction_candidates(self, batch: PeerBatch, now_ns: int) -> list[bytes]:
        policy = self._policy
        last = batch.last_seen_ns
        idle = last < now_ns - int(policy.idle_s * NS)
        chosen = np.flatnonzero(idle)
        entries = len(batch)
        excess = entries - len(chosen) - int(policy.low_water * self._source.capacity)
        if entries > policy.high_water * self._source.capacity and excess > 0:
            evictable = np.flatnonzero(~idle & (last < now_ns - int(policy.min_idle_s * NS)))
            oldest_first = evictable[np.argsort(last[evictable], kind="stable")]
            chosen = np.concatenate([chosen, oldest_first[:excess]])
        keys: list[bytes] = batch.key_column()[chosen].tolist()
        return keys
