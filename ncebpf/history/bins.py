"""Per-peer counts in clock-aligned time bins: what the history's rows hold. Pure.

Every drain hands its deltas (the peers whose counters moved, what moved, the
drain's epoch second) to the open bin. A bin covers [start, start + seconds),
start a multiple of seconds since the epoch (UTC: a day bin is a UTC day).
The kernel keeps no time stamps, so a delta belongs to the bin of the drain
that read it; the daemon drains at each bin's end, so a bin holds what
arrived within it to within a drain's latency. A drain that comes within
CLOSE_GRACE_S after the end still belongs to the ending bin (it is that
drain); a later one means the daemon was not there (stopped, killed, stalled)
and its deltas go to the bin of its own time.

The open bin is state like the peer table: it goes into every checkpoint
(ncebpf.checkpoint) and comes back from it, so that a restart or a crash
neither loses nor repeats a bin's counts (issue 14 item 2).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import Counts
from ncebpf.peerindex import KEY_DTYPE, KeyIndex, Keys

CLOSE_GRACE_S = 5  # a drain this soon after a bin's end is the drain that closes it


def bin_start(epoch_s: int, seconds: int) -> int:
    """The start of the bin of `seconds` that holds epoch second epoch_s."""
    return epoch_s - epoch_s % seconds


@dataclass(frozen=True)
class ClosedBin:
    """One bin's rows: keys (n,) V20 (struct peer_key), counts (n, 4)
    uint64 (in packets, in bytes, out packets, out bytes: design §2's peer rule),
    first_seen and last_seen (n,) uint32 epoch seconds, the drains that first and
    last saw the peer move within the bin; names: the reverse-DNS names of the peers
    that had some when the bin closed, by position."""

    start: int
    seconds: int
    keys: Keys
    counts: Counts
    first_seen: npt.NDArray[np.uint32]
    last_seen: npt.NDArray[np.uint32]
    names: dict[int, Sequence[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Members of an .npz archive (ncebpf.history.spool); from_arrays reads them back."""
        names = json.dumps([[at, list(names)] for at, names in self.names.items()])
        return {"span": np.array([self.start, self.seconds], dtype=np.int64), "keys": self.keys,
                "counts": self.counts, "first_seen": self.first_seen,
                "last_seen": self.last_seen,
                "names": np.frombuffer(names.encode(), dtype=np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> ClosedBin:
        start, seconds = (int(v) for v in arrays["span"])
        names: dict[int, Sequence[str]] = {
            int(at): tuple(given) for at, given in
            json.loads(arrays["names"].tobytes().decode())} if "names" in arrays else {}
        return cls(start, seconds, np.ascontiguousarray(arrays["keys"], dtype=KEY_DTYPE),
                   arrays["counts"].astype(np.uint64).reshape(-1, 4),
                   arrays["first_seen"].astype(np.uint32), arrays["last_seen"].astype(np.uint32),
                   names)

    def with_names(self, names: dict[int, Sequence[str]]) -> ClosedBin:
        return replace(self, names=names)


@dataclass(frozen=True)
class Retraction:
    """Bins from `since` on (epoch seconds) are to be taken out of the database: a run
    resumed from a checkpoint reads again what was counted after it, and the bins written
    from those counts would otherwise count twice (ncebpf.history.sink)."""

    since: int

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {"retract_since": np.array([self.since], dtype=np.int64)}


class OpenBin:
    """The bin being filled: a KeyIndex of its peers and their columns."""

    def __init__(self, start: int, seconds: int) -> None:
        self.start, self.seconds = start, seconds
        self._index = KeyIndex()
        self._counts: Counts = np.zeros((0, 4), dtype=np.uint64)
        self._first = np.zeros(0, dtype=np.uint32)
        self._last = np.zeros(0, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def end(self) -> int:
        return self.start + self.seconds

    def add(self, keys: Keys, deltas: Counts, now: int) -> None:
        """Add deltas (n, 4) of n distinct keys, read by the drain at epoch second now."""
        if not len(keys):
            return
        rows, new = self._index.rows(keys, add=True)
        size = len(self._index.live)
        if len(self._counts) < size:
            self._counts = np.concatenate(
                [self._counts, np.zeros((size - len(self._counts), 4), dtype=np.uint64)])
            self._first = np.concatenate(
                [self._first, np.zeros(size - len(self._first), dtype=np.uint32)])
            self._last = np.concatenate(
                [self._last, np.zeros(size - len(self._last), dtype=np.uint32)])
        self._counts[rows] += deltas
        self._first[rows[new]] = now
        self._last[rows] = now

    def closed(self) -> ClosedBin:
        """The bin's rows, in the order the peers came (copies: the open bin may go on;
        not sorted: that would cost the loop half a second at a million peers)."""
        rows = self._index.live_rows()
        return ClosedBin(self.start, self.seconds, self._index.keys[rows], self._counts[rows],
                         self._first[rows], self._last[rows])

    @classmethod
    def resumed(cls, rows: ClosedBin) -> OpenBin:
        """The open bin that closed() returned rows of (from a checkpoint)."""
        opened = cls(rows.start, rows.seconds)
        if len(rows):
            opened.add(rows.keys, rows.counts, 0)
            found, _ = opened._index.rows(rows.keys, add=False)
            opened._first[found] = rows.first_seen
            opened._last[found] = rows.last_seen
        return opened


class Binner:
    """Deltas in, closed bins out: the open bin and the rule of when it closes.

    add() and tick() return the bins they closed, oldest first (at most one
    each: a bin with no delta is not a bin, and nothing is written for it).
    """

    def __init__(self, seconds: int, open_bin: OpenBin | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"a bin is a positive number of seconds, not {seconds}")
        self.seconds = seconds
        # A resumed bin of another width (the option changed) closes at the first drain.
        self.open = open_bin

    def add(self, keys: Keys, deltas: Counts, now: int) -> list[ClosedBin]:
        """Deltas read by the drain at epoch second now (n distinct keys, (n, 4) counts)."""
        closed: list[ClosedBin] = []
        current = self.open
        if current is not None and (now >= current.end + CLOSE_GRACE_S or
                                    current.seconds != self.seconds or now < current.start):
            closed = self._close()
            current = None
        if current is None:
            if not len(keys):
                return closed
            current = self.open = OpenBin(bin_start(now, self.seconds), self.seconds)
        current.add(keys, deltas, min(max(now, current.start), current.end - 1))
        return closed

    def tick(self, now: int) -> list[ClosedBin]:
        """After the drain at epoch second now: the open bin, if it has ended."""
        if self.open is not None and now >= self.open.end:
            return self._close()
        return []

    def next_end(self) -> int | None:
        """The epoch second the open bin ends (a drain is due then), or None."""
        return self.open.end if self.open is not None else None

    def flush(self) -> list[ClosedBin]:
        """Close the open bin now, however far it got."""
        return self._close()

    def _close(self) -> list[ClosedBin]:
        current, self.open = self.open, None
        if current is None or not len(current):
            return []
        return [current.closed()]
