"""Which peers moved since a caller's cursor: the daemon's side of `ncebpf top`. Pure.

A sink of the drain (design §1, stage 2: top's cursor). While someone asks,
each update compares the table's counters with a copy of the previous
update's and stamps the rows that moved with the update's sequence number;
an answer is then the listed rows stamped after the caller's cursor, cut
from the table's columns with numpy (milliseconds at 100 000 peers). A row
listed after the cursor is marked `born`: its whole counts are new to the
caller.

A cursor is `<session>:<sequence>`. A caller whose cursor is of another
session (a first request, a restarted daemon, a feed woken again after
sleeping), or older than the last time a peer left the table (evicted,
purged, a HUP), gets every listed peer once, marked `full`, and forgets the
peers that are not in it.

Nobody asking costs nothing: the feed sleeps after IDLE_S without a request
and drops its copies; the next request wakes it with a new session.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import Counts, PeerTable
from ncebpf.top.wire import RECORD, Header, Records

IDLE_S = 60.0  # asleep after this long without a request


class ChangeFeed:
    """Per-row sequence stamps over one PeerTable. update() after each drain (and before
    each answer, for what changed outside drains: a purge, a HUP); answer() for a request.

    clock: monotonic seconds, for the sleep."""

    def __init__(self, table: PeerTable, clock: Callable[[], float]) -> None:
        self._table = table
        self._clock = clock
        self._session = ""  # "" = asleep
        self._seq = 0
        self._woke_seq = 0  # cursors before this one are of no use
        self._removed_seq = 0  # the last update that saw a peer leave
        self._last_request = 0.0
        self._counts: Counts = np.zeros((0, 4), dtype=np.uint64)
        self._listed = np.zeros(0, dtype=np.bool_)
        self._moved = np.zeros(0, dtype=np.uint64)  # row -> last update that saw it move
        self._born = np.zeros(0, dtype=np.uint64)  # row -> the update that saw it listed
        self._start = 0
        self._others = 0
        self._updated: tuple[int, ...] = ()  # _state() at the last update

    def _state(self) -> tuple[int, ...]:
        """What changes outside drains: the reset time, the peers gone, the peers listed."""
        table = self._table
        return table.start, table.others.peers, table.listed_count, table.index.high

    @property
    def awake(self) -> bool:
        return bool(self._session)

    def _wake(self) -> None:
        table = self._table
        n = table.index.high
        self._session = secrets.token_hex(4)
        self._seq += 1
        self._woke_seq = self._removed_seq = self._seq
        self._counts = table.counts[:n].copy()
        self._listed = table.listed[:n].copy()
        self._moved = np.zeros(n, dtype=np.uint64)
        self._born = np.zeros(n, dtype=np.uint64)
        self._start, self._others = table.start, table.others.peers
        self._updated = self._state()

    def sleep_if_idle(self) -> None:
        """Drop the copies when nobody asked for IDLE_S."""
        if self._session and self._clock() - self._last_request > IDLE_S:
            self._session = ""
            self._counts = np.zeros((0, 4), dtype=np.uint64)
            self._listed = np.zeros(0, dtype=np.bool_)
            self._moved = self._born = np.zeros(0, dtype=np.uint64)

    def update(self) -> None:
        """Stamp the rows whose counters moved or that were listed since the last update.
        Nothing while asleep. About 2 ms at 100 000 peers."""
        if not self._session:
            return
        table = self._table
        n = table.index.high
        if n > len(self._listed):  # rows handed out since: unlisted, zero, until now
            grow = n - len(self._listed)
            self._counts = np.concatenate([self._counts, np.zeros((grow, 4), np.uint64)])
            self._listed = np.concatenate([self._listed, np.zeros(grow, np.bool_)])
            self._moved = np.concatenate([self._moved, np.zeros(grow, np.uint64)])
            self._born = np.concatenate([self._born, np.zeros(grow, np.uint64)])
        counts, listed = table.counts[:n], table.listed[:n]
        was_listed = self._listed[:n]
        moved = np.flatnonzero(np.any(counts != self._counts[:n], axis=1) | (listed != was_listed))
        self._seq += 1
        if len(moved):
            self._moved[moved] = self._seq
            newly = moved[listed[moved] & ~was_listed[moved]]
            self._born[newly] = self._seq
            if not listed[moved].all() or len(self._listed) > n and self._listed[n:].any():
                self._removed_seq = self._seq
            self._counts[moved] = counts[moved]
            self._listed[:n] = listed
        if (table.start, table.others.peers) != (self._start, self._others):
            # Retired, purged or reset, maybe listed again since: callers start over.
            self._removed_seq = self._seq
            self._start, self._others = table.start, table.others.peers
        self._updated = self._state()

    def is_current(self, cursor: str) -> bool:
        """Whether cursor is this feed's latest: no update (no drain) since the answer that
        gave it, so an answer now would hold nothing new."""
        return bool(self._session) and cursor == f"{self._session}:{self._seq}"

    def answer(self, cursor: str, header: Header) -> tuple[Header, Records, dict[int, list[str]]]:
        """(header with this feed's cursor and `full`, the records of the listed peers that
        moved since cursor, their names by record position). cursor "" (or unknown, or
        older than a peer's leaving) gets every listed peer. Wakes a sleeping feed."""
        self._last_request = self._clock()
        if not self._session:
            self._wake()
        elif self._state() != self._updated:
            self.update()  # a purge or a HUP since the last drain (counts move in drains)
        session, _, text = cursor.partition(":")
        since = int(text) if text.isdigit() and session == self._session else -1
        table = self._table
        n = min(table.index.high, len(self._listed))
        listed = table.listed[:n]
        full = since < max(self._woke_seq, self._removed_seq) or since > self._seq
        if full:
            rows = np.flatnonzero(listed)
        else:
            rows = np.flatnonzero(listed & (self._moved[:n] > since))
        records: Records = np.zeros(len(rows), dtype=RECORD)
        records["key"] = table.index.keys[rows]
        records["counts"] = table.counts[rows]
        records["first_seen"] = table.first_seen[rows]
        records["last_seen"] = table.last_seen[rows]
        if since >= self._woke_seq:  # else nothing is known about the caller's view
            records["born"] = self._born[rows] > since
        names = _names_of(table.names, rows)
        return (replace(header, cursor=f"{self._session}:{self._seq}", full=full),
                records, names)


def _names_of(names: dict[int, Sequence[str]], rows: npt.NDArray[np.int64]
              ) -> dict[int, list[str]]:
    """Names of these (ascending) rows where there are some, by position among them."""
    if not names or not len(rows):
        return {}
    named = np.fromiter(names, dtype=np.int64, count=len(names))
    at = np.searchsorted(rows, named)
    inside = at < len(rows)
    inside[inside] = rows[at[inside]] == named[inside]
    return {int(pos): list(names[int(row)])
            for pos, row in zip(at[inside].tolist(), named[inside].tolist(), strict=True)}
