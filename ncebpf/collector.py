"""Move counts from a counter source into the peer table, losing nothing. Pure: no I/O.

The kernel's counters are cumulative and a drain never resets them: the
collector remembers the last cumulative value it read for each map entry
and adds only the difference. Reading therefore cannot race with the
programs' increments — whatever a read misses, the next read sees. The only
writes the collector makes are evictions, done with an atomic
lookup-and-delete whose final values are added like any other read, and
only for entries idle long enough (a day, or `min_idle_s` when the map is
nearly full) that no packet is in flight for them.

An eviction deletes counts from the kernel that then live only in the table,
so the table must be on disk first: the drain marks the rows it will evict
(PeerTable.evicting), calls `before_evict` (the daemon writes its checkpoint
there), and only then deletes. A daemon killed after the delete resumes from
that checkpoint: its first drain retires the marked rows the source no longer
has, with the counts the checkpoint holds; marked rows still in the source
were not deleted and count on. What such a kill loses is at most what an
idle peer sent between the drain's read and the delete.

A source reads whole maps as a PeerBatch of columns, and the collector
works on whole columns with numpy: per-CPU values summed by the source,
rows found through the table's index, deltas against the table's memory of
the previous read, the rate update per row (ncebpf.accounting): no Python
object per peer anywhere on the way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import Counts, PeerTable, Totals, bytes_of, packets_of
from ncebpf.peerindex import Keys, Rows, key_array


class PeerCounts(NamedTuple):
    """One map entry, summed over CPUs; cumulative since the entry was created.

    in = frames the peer sent to a local address, out = frames sent to the peer
    (design §2, the peer rule)."""

    key: bytes
    in_packets: int
    in_bytes: int
    out_packets: int
    out_bytes: int

    @property
    def packets(self) -> int:
        return self.in_packets + self.out_packets

    @property
    def bytes(self) -> int:
        return self.in_bytes + self.out_bytes


@dataclass(frozen=True)
class PeerBatch:
    """A whole map read at once: row i's key is keys[KEY_SIZE i:KEY_SIZE (i + 1)], its
    cumulative counters counts[i] (in packets, in bytes, out packets, out bytes)."""

    keys: bytes
    counts: Counts  # (n, 4) uint64, summed over CPUs

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def packets(self) -> npt.NDArray[np.uint64]:
        """Both directions' packets per row."""
        return packets_of(self.counts)

    @property
    def bytes(self) -> npt.NDArray[np.uint64]:
        """Both directions' bytes per row."""
        return bytes_of(self.counts)

    def key_column(self) -> Keys:
        """The keys as one (n,) V20 array; its .tolist() gives KEY_SIZE-byte bytes objects."""
        return key_array(self.keys)

    @classmethod
    def from_counts(cls, rows: Sequence[PeerCounts]) -> PeerBatch:
        counts = np.array([r[1:] for r in rows], dtype=np.uint64).reshape(-1, 4)
        return cls(keys=b"".join(r.key for r in rows), counts=counts)


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


def system_clock() -> float:
    """Epoch seconds."""
    return time.time()


@dataclass(frozen=True)
class EvictionPolicy:
    """Idleness is judged at drain granularity: a peer is idle since the last drain that
    saw its counters move (the kernel keeps no time stamps, issue 13 item 3)."""

    idle_s: float = 86400.0  # always evict entries idle this long (upstream purge age)
    high_water: float = 0.9  # when the map is this full ...
    low_water: float = 0.75  # ... evict the longest-idle entries down to this fill
    min_idle_s: float = 10.0  # but never an entry active within this many seconds


@dataclass(frozen=True)
class DrainReport:
    entries: int  # map entries read
    changed: int  # entries whose counts moved since the previous drain
    evicted: int
    seconds: float  # the whole drain, sinks excluded
    # When the counts are from: the middle of the read of the peers that was kept (epoch
    # s, the collector's clock). A read of 100 000 peers takes a good part of a second,
    # each entry read at its own moment; rates divide by the time between two of these.
    read_at: float = 0.0


# How often, and for how long a read of the peers, a drain tries again for peers and
# totals that agree (Collector._read_at_one_moment): 3 reads of a map of 10 000 peers.
_CONSISTENT_READ_TRIES = 3
_CONSISTENT_READ_MAX_S = 0.02


class Collector:
    """Drains a CounterSource into a PeerTable, whole batches at a time with numpy.

    The table remembers, per row, the source's cumulative counters as last
    read (PeerTable.source); a drain subtracts them, so a delta is exactly
    what arrived since. A cumulative value below the remembered one means
    the entry was deleted and made anew in between (by someone else): it
    counts whole.
    """

    def __init__(self, source: CounterSource, table: PeerTable,
                 policy: EvictionPolicy = EvictionPolicy(),
                 clock: Callable[[], float] = system_clock,
                 before_evict: Callable[[], None] | None = None) -> None:
        """before_evict: called during a drain that evicts, after the table holds
        everything read and marks the rows to go (PeerTable.evicting), before any is
        deleted from the source: where the daemon checkpoints."""
        self._source = source
        self._table = table
        self._policy = policy
        self._clock = clock
        self._before_evict = before_evict
        # The previous read's keys (a BLAKE2 digest: 16 B, not 20 B a peer) and rows: a
        # map that gained and lost no entry since returns the same keys in the same
        # order, and then the rows are known without a lookup.
        self._last_read: tuple[bytes, int, npt.NDArray[np.int32]] = (
            b"", -1, np.zeros(0, dtype=np.int32))
        # The outputs that take each drain's result (design §1, stage 2: sinks of the
        # drain), called at its end on the loop's thread: the Prometheus metrics.
        self.sinks: list[Callable[[DrainReport], None]] = []

    def drain(self) -> DrainReport:
        started = time.perf_counter()
        now = self._clock()
        batch, totals, read_at = self._read_at_one_moment()
        totals_before = self._table.totals
        rows = self._rows_of(batch, int(now))
        changed = self._absorb(rows, batch.counts, int(now))
        table = self._table
        if len(table.evicting):  # a run killed during an eviction: what went, goes
            table.retire_rows(np.setdiff1d(table.evicting, rows))
            table.evicting = np.zeros(0, dtype=np.int64)
        table.totals = totals
        # The global rates take the drain as one batch, as the peers take theirs.
        grown = table.totals
        table.rates.add(grown.packets - totals_before.packets,
                        grown.bytes - totals_before.bytes, int(now))
        stale = self._eviction_candidates(rows, now)
        evicted = 0
        if len(stale):
            table.evicting = stale
            if self._before_evict is not None:
                self._before_evict()
            final = PeerBatch.from_counts(list(self._source.evict(
                table.index.keys[stale].tolist())))
            evicted = len(final)
            if evicted:
                self._absorb(table.rows_of(final.key_column(), int(now)), final.counts,
                             int(now))
            # Out of the map, out of the table: the daemon is bounded as the map is.
            table.retire_rows(stale)
            table.evicting = np.zeros(0, dtype=np.int64)
        report = DrainReport(len(batch), changed, evicted, time.perf_counter() - started,
                             read_at)
        for sink in self.sinks:
            sink(report)
        return report

    def _read_at_one_moment(self) -> tuple[PeerBatch, Totals, float]:
        """The peers and the totals as of one moment, when the traffic lets them be, and
        that moment (epoch s: the middle of the read of the peers).

        The two are separate maps, read one after the other. The program counts a frame
        under its peer first and in the totals next (bpf/ncebpf.c count_peer), so totals
        that did not move across the read of the peers mean no frame was counted during
        it: then the matched totals equal the sum of the peers exactly, as a dump taken
        on a quiet link must show (a stray frame, such as an MLD report, would otherwise
        land in one and not yet in the other). Under steady traffic they never stand
        still; the read is tried again only while it is cheap, and what arrived during
        the last read is in the next drain's peers.
        """
        before = self._source.read_totals()
        for _ in range(_CONSISTENT_READ_TRIES):
            started = time.perf_counter()
            read_started = self._clock()
            batch = self._source.read_peers()
            read_at = (read_started + self._clock()) / 2
            after = self._source.read_totals()
            if (after.packets == before.packets
                    or time.perf_counter() - started > _CONSISTENT_READ_MAX_S):
                break
            before = after
        return batch, after, read_at

    def _rows_of(self, batch: PeerBatch, now: int) -> Rows:
        digest, generation, known = self._last_read
        index = self._table.index
        keys_digest = hashlib.blake2b(batch.keys, digest_size=16).digest()
        if generation == index.generation and keys_digest == digest:
            rows: Rows = known.astype(np.int64)
            return rows
        rows = self._table.rows_of(batch.key_column(), now)
        self._last_read = (keys_digest, index.generation, rows.astype(np.int32))
        return rows

    def _absorb(self, rows: Rows, cumulative: Counts, now: int) -> int:
        """Count what moved since the last read of these rows; return how many moved."""
        table = self._table
        previous = table.source[rows]
        remade = np.any(cumulative < previous, axis=1)
        deltas = cumulative - np.where(remade[:, None], np.uint64(0), previous)
        moved = np.any(deltas != 0, axis=1)
        if not moved.all():
            rows, deltas, cumulative = rows[moved], deltas[moved], cumulative[moved]
        table.source[rows] = cumulative
        table.count(rows, deltas, now)
        return len(rows)

    def _eviction_candidates(self, rows: Rows, now: float) -> Rows:
        policy = self._policy
        last = self._table.last_seen[rows].astype(np.float64)
        idle = last < now - policy.idle_s
        chosen = np.flatnonzero(idle)
        entries = len(rows)
        capacity = self._source.capacity
        excess = entries - len(chosen) - int(policy.low_water * capacity)
        if entries > policy.high_water * capacity and excess > 0:
            evictable = np.flatnonzero(~idle & (last < now - policy.min_idle_s))
            oldest_first = evictable[np.argsort(last[evictable], kind="stable")]
            chosen = np.concatenate([chosen, oldest_first[:excess]])
        stale: Rows = rows[chosen]
        return stale
