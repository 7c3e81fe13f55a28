"""Rates over the last 2, 10 and 40 seconds, as iftop shows them, from cumulative counters. Pure.

The daemon's counters are cumulative since each peer was listed, and each
answer comes with the time of the drain that read them. Between two answers
a peer's counters grew by a delta: what it sent and received in that span.
A window's rate is the sum of the deltas of the answers inside it, divided
by the time those answers cover: from the answer before the oldest one inside
(the span's start) to the latest. So a 2-second rate of a `top` refreshing
every second covers exactly the two drains' spans, whatever their jitter,
and before the first 40 seconds a 40-second rate covers what there is.

Peers are kept in columns indexed by row, found through ncebpf.peerindex, as
the daemon keeps them; each window keeps running sums per row, so an answer
costs the peers that moved in it, not every peer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import Counts
from ncebpf.peerindex import KeyIndex, Keys, Rows

WINDOWS_S = (2.0, 10.0, 40.0)
# A full answer finds this many more peers gone than listed: start over rather than keep
# columns for a flood of spoofed peers that left long ago.
MAX_GONE = 65536


@dataclass(frozen=True)
class _Batch:
    """What one answer added: rows and their (k, 4) deltas, over (previous, time]."""

    previous: float
    time: float
    rows: Rows
    deltas: Counts


class PeerRates:
    """The peers of one instance as seen by a `top`, and their windowed sums.

    Columns per row: cumulative counts (in packets, in bytes, out packets, out
    bytes, as the dump's), first and last seen (drain epoch s), listed, and per
    window the sum of the deltas inside it. names: row -> names.
    """

    def __init__(self, windows: tuple[float, ...] = WINDOWS_S) -> None:
        self.windows = windows
        self.resets = -1  # how often the rows were given anew (a Labels's cache goes then)
        self._reset()

    def restart(self) -> None:
        """Forget every peer and window: the next answer is a baseline (a restarted
        instance, one that came back)."""
        self._reset()

    def _reset(self) -> None:
        windows = self.windows
        self.resets += 1
        self.index = KeyIndex()
        self.counts: Counts = np.zeros((0, 4), dtype=np.uint64)
        self.first_seen = np.zeros(0, dtype=np.uint32)
        self.last_seen = np.zeros(0, dtype=np.uint32)
        self.listed = np.zeros(0, dtype=np.bool_)
        self.sums = np.zeros((len(windows), 0, 4), dtype=np.uint64)
        self.names: dict[int, list[str]] = {}
        self.renamed: list[int] = []  # rows whose names changed, until a Labels takes them
        self.time: float | None = None  # the latest answer's drain time
        self.started: float | None = None  # the first answer's: nothing is known before
        self._batches: deque[_Batch] = deque()
        self._inside = [0] * len(windows)  # per window: batches already taken out of it

    def absorb(self, time: float, full: bool, keys: Keys, counts: Counts,
               born: npt.NDArray[np.bool_], first_seen: npt.NDArray[np.uint32],
               last_seen: npt.NDArray[np.uint32], names: dict[int, list[str]]) -> None:
        """One answer: keys (n,) V20 with their cumulative counts (n, 4) as of time (epoch
        s); born: listed after the previous answer (all its counts are new). full: these
        are every listed peer, the others left. names by position among the n."""
        if full and self.index.high - len(keys) > MAX_GONE:
            self._reset()  # see MAX_GONE: the rates start over
        rows, _ = self.index.rows(keys, add=True)
        self._fit()
        old = self.counts[rows]
        known = self.listed[rows]
        shrank = np.any(counts < old, axis=1)  # a HUP's reset, a purge: counted anew
        whole = (born | shrank)[:, None]
        deltas: Counts = np.where(whole, counts, np.where(known[:, None], counts - old, 0)
                                  ).astype(np.uint64)
        if self.time is None:
            deltas[:] = 0  # the first answer is the baseline
        if full:
            self.listed[:] = False
        self.listed[rows] = True
        self.counts[rows] = counts
        self.first_seen[rows] = first_seen
        self.last_seen[rows] = last_seen
        for at, listed_names in names.items():
            row = int(rows[at])
            if self.names.get(row) != listed_names:
                self.names[row] = listed_names
                self.renamed.append(row)
        if self.time is None:
            self.time = self.started = time
            return
        moved = np.any(deltas != 0, axis=1)
        batch = _Batch(self.time, max(time, self.time), rows[moved], deltas[moved])
        self._batches.append(batch)
        for window in range(len(self.windows)):  # rows of one answer are distinct: no add.at
            self.sums[window, batch.rows] += batch.deltas
        self.time = batch.time
        self._expire()

    def _fit(self) -> None:
        size = self.index.high
        if len(self.listed) >= size:
            return
        grow = max(size, 2 * len(self.listed)) - len(self.listed)
        self.counts = np.concatenate([self.counts, np.zeros((grow, 4), np.uint64)])
        self.first_seen = np.concatenate([self.first_seen, np.zeros(grow, np.uint32)])
        self.last_seen = np.concatenate([self.last_seen, np.zeros(grow, np.uint32)])
        self.listed = np.concatenate([self.listed, np.zeros(grow, np.bool_)])
        self.sums = np.concatenate([self.sums, np.zeros((len(self.windows), grow, 4),
                                                        np.uint64)], axis=1)

    def _expire(self) -> None:
        """Take the batches that ended a window ago out of that window's sums."""
        assert self.time is not None
        for window, width in enumerate(self.windows):
            while self._inside[window] < len(self._batches):
                batch = self._batches[self._inside[window]]
                if batch.time > self.time - width:
                    break
                self.sums[window, batch.rows] -= batch.deltas
                self._inside[window] += 1
        gone = min(self._inside)
        for _ in range(gone):
            self._batches.popleft()
        self._inside = [inside - gone for inside in self._inside]

    def spans(self) -> tuple[float, ...]:
        """Seconds each window's sums cover: from the start of its oldest answer inside to
        the latest; 0 before two answers."""
        if self.time is None:
            return tuple(0.0 for _ in self.windows)
        spans = []
        for window in range(len(self.windows)):
            inside = self._inside[window]
            start = self._batches[inside].previous if inside < len(self._batches) \
                else self.time
            spans.append(self.time - start)
        return tuple(spans)

    def rates(self) -> npt.NDArray[np.float64]:
        """(windows, rows, 4) per second: in packets, in bytes, out packets, out bytes over
        each window; zeros where a window covers no time yet."""
        spans = np.array(self.spans(), dtype=np.float64)
        safe = np.where(spans > 0, spans, np.inf)
        per_second: npt.NDArray[np.float64] = self.sums.astype(np.float64) / \
            safe[:, None, None]
        return per_second

    def listed_rows(self) -> Rows:
        return np.flatnonzero(self.listed[:self.index.high])


@dataclass
class TotalRates:
    """Rates of cumulative instance-wide counters (frames, bytes, ...) over the same
    windows: samples (time, values) kept for the longest window.

    The counters only grow between resets of the instance (a HUP, a restart); a reset
    starts the windows over, as the peers' do: a sample whose `start` (the table's start,
    epoch s) differs from the previous one's, or with any value below the previous one."""

    windows: tuple[float, ...] = WINDOWS_S

    def __post_init__(self) -> None:
        self._samples: deque[tuple[float, npt.NDArray[np.float64]]] = deque()
        self._start: int | None = None

    def restart(self) -> None:
        """Forget every sample: rates from the second sample on again."""
        self._samples.clear()

    def add(self, time: float, values: npt.NDArray[np.float64], start: int = 0) -> None:
        """One answer's counters (epoch s, values (k,)); start: the instance's reset time."""
        if self._samples and (start != self._start
                              or bool(np.any(values < self._samples[-1][1]))):
            self._samples.clear()
        self._start = start
        if self._samples and time <= self._samples[-1][0]:
            self._samples[-1] = (self._samples[-1][0], values)
        else:
            self._samples.append((time, values))
        # Keep one sample at or before the longest window's start.
        while len(self._samples) > 2 and self._samples[1][0] <= time - self.windows[-1]:
            self._samples.popleft()

    def over(self, window: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(per second, growth) over the last window seconds, from the latest sample at or
        before its start (or the oldest); zeros before two samples."""
        if len(self._samples) < 2:
            zero = np.zeros_like(self._samples[0][1]) if self._samples else np.zeros(0)
            return zero, zero
        now, latest = self._samples[-1]
        base_time, base = self._samples[0]
        for when, values in self._samples:
            if when > now - window:
                break
            base_time, base = when, values
        growth = latest - base
        return growth / max(now - base_time, 1e-9), growth
