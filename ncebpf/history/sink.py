"""The history as a sink of the drain (design §1, stage 2): deltas in, rows in SQL out.

On the daemon's loop: every delta the peer table counts (PeerTable.count)
goes into the open bin (ncebpf.history.bins); the loop drains at each bin's
end and then closes it into the spool (ncebpf.history.spool), which is on
disk before the next checkpoint is taken. Off the loop: a thread of its own
sends the spooled bins to the database oldest first, each in one
transaction, and rolls up hours and days; when the database is down or slow
it waits and tries again, with the bins safe in the spool, and counting
never waits for it.

Continuity (issue 14 item 2): the open bin is saved in every checkpoint and
comes back from it, so a restart or a kill -9 neither loses nor repeats a
bin's counts (a bin closed again from an older checkpoint replaces the rows
written from the newer one, and the counts since that checkpoint are read
again into the bin of their drain). A plain `stop` ends the table's data set
but not the bin: it is kept in the spool directory (open-bin.npz) for the
next start. Every stop also sends the open bin as far as it got, so that the
database holds everything counted; the next run replaces that row set when
the bin closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from ncebpf.accounting import Counts
from ncebpf.checkpoint import save_arrays
from ncebpf.history import store
from ncebpf.history.bins import Binner, ClosedBin, OpenBin, Retraction, bin_start
from ncebpf.history.spool import Spool, SpoolError, read_entry
from ncebpf.peerindex import Keys

log = logging.getLogger(__name__)

RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0
ROLL_UP_EVERY_S = 300.0
CHECKPOINT_PREFIX = "history_"  # the open bin's members in a checkpoint


@dataclass(frozen=True)
class HistoryOptions:
    """What --history and its options ask for (ncebpf.config)."""

    url: str  # a database URL (ncebpf.history.store.database_url)
    bin_s: int  # bin width, seconds, a divisor of 3600
    retention: store.Retention
    queue_bins: int  # at most this many closed bins wait in the spool
    spool_dir: Path
    source: store.Source


@dataclass(frozen=True)
class HistoryStatus:
    """For the dump's totals: bins waiting for the database, bins dropped from a full
    queue."""

    pending_bins: int
    dropped_bins: int


SINCE_MEMBER = "history_since"


def open_bin_arrays(binner: Binner, now: int) -> dict[str, npt.NDArray[Any]]:
    """The history's state as checkpoint members: the open bin (prefixed members), and
    `history_since`, the first second of the bins that only counts read after the
    checkpoint can have gone into: the open bin's start, else the start of now's bin. Pure."""
    since = binner.open.start if binner.open is not None else bin_start(now, binner.seconds)
    members = {SINCE_MEMBER: np.array([since], dtype=np.int64)}
    if binner.open is not None:
        members |= {CHECKPOINT_PREFIX + name: array
                    for name, array in binner.open.closed().arrays().items()}
    return members


@dataclass(frozen=True)
class Resumed:
    """The history's state in a checkpoint (open_bin_arrays): the open bin, if any, and
    the first second of the bins written from counts the checkpoint had not read."""

    open_bin: OpenBin | None
    since: int


def resumed_from(arrays: dict[str, npt.NDArray[Any]]) -> Resumed | None:
    """The history's state in checkpoint members, or None (no history in that run)."""
    if SINCE_MEMBER not in arrays:
        return None
    members = {name[len(CHECKPOINT_PREFIX):]: array for name, array in arrays.items()
               if name.startswith(CHECKPOINT_PREFIX) and name != SINCE_MEMBER}
    open_bin = OpenBin.resumed(ClosedBin.from_arrays(members)) if members else None
    return Resumed(open_bin, int(arrays[SINCE_MEMBER][0]))


class HistorySink:
    """The history of one run: observe() gets the table's deltas, tick() closes bins, a
    writer thread sends them. A context manager: the thread runs inside it; on exit the
    thread gets a few seconds to send what waits (the rest stays spooled)."""

    def __init__(self, options: HistoryOptions, resumed: Resumed | None = None,
                 reread: bool = False, mode: int = 0o600,
                 names_of: Callable[[Keys], dict[int, Sequence[str]]] = lambda keys: {}
                 ) -> None:
        """resumed: the history's state in the checkpoint the table resumed from (None
        without one: the open bin a stopped run left, if any); reread: the counts after
        that checkpoint will be read again (the pinned maps counted on), so the bins written
        from them go (a Retraction, before anything this run spools). names_of: the names of
        a bin's peers when it closes (PeerTable.names_of)."""
        self.options = options
        self._names_of = names_of
        self.spool = Spool(options.spool_dir, options.queue_bins, mode)
        self.spool.note_database(options.url)
        if resumed is not None:
            self.forget_stopped_bin()  # older than the checkpoint, which has the bin
            if reread:
                self.spool.put(Retraction(resumed.since))
        open_bin = resumed.open_bin if resumed is not None else self._stopped_bin()
        self.binner = Binner(options.bin_s, open_bin)
        self.closed_bins = 0  # bins closed since the caller last looked (take_closed)
        self.on_wait: Callable[[], None] = lambda: None  # each second close() waits
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error = ""
        self._said_waiting = 0  # bins the last warning said were waiting
        self._written = 0  # entries sent since the last failure

    def _stopped_bin(self) -> OpenBin | None:
        path = self.spool.open_bin_path
        try:
            entry = read_entry(path)
            return OpenBin.resumed(entry) if isinstance(entry, ClosedBin) else None
        except FileNotFoundError:
            return None
        except SpoolError as exc:
            log.warning("history: the open bin a stopped run left is unreadable, its counts "
                        "are lost: %s", exc)
            return None

    # -- the loop's side ---------------------------------------------------------------

    def observe(self, keys: Keys, deltas: Counts, now: int) -> None:
        """PeerTable's delta observer: n distinct keys, (n, 4) deltas, drain epoch second."""
        self._spool(self.binner.add(keys, deltas, now))

    def tick(self, now: float) -> None:
        """After each drain: close the open bin if it has ended."""
        self._spool(self.binner.tick(int(now)))

    def next_drain_at(self) -> float | None:
        """The epoch second a drain should come (the open bin's end), or None."""
        end = self.binner.next_end()
        return float(end) if end is not None else None

    def checkpoint_arrays(self) -> dict[str, npt.NDArray[Any]]:
        return open_bin_arrays(self.binner, int(time.time()))

    def take_closed(self) -> bool:
        """Whether a bin closed since the last call: the daemon checkpoints then, so that a
        crash re-reads as little as possible into a later bin."""
        closed, self.closed_bins = self.closed_bins, 0
        return closed > 0

    def spool_open_bin(self) -> None:
        """At a stop: send the open bin as far as it got, so the database has everything
        counted; it stays open, and the next run writes it again, whole, when it closes."""
        if self.binner.open is not None and len(self.binner.open):
            self._spool([self.binner.open.closed()])
            self.closed_bins -= 1  # not closed: sent as far as it got

    def keep_open_bin(self) -> None:
        """At a plain stop (the checkpoint goes): keep the open bin for the next start."""
        path = self.spool.open_bin_path
        if self.binner.open is None or not len(self.binner.open):
            path.unlink(missing_ok=True)
            return
        try:
            save_arrays(path, self.binner.open.closed().arrays(), self.spool.mode)
        except OSError as exc:
            log.warning("history: could not keep the open bin in %s, its counts are lost: %s",
                        path, exc)

    def forget_stopped_bin(self) -> None:
        """The open bin is in a checkpoint that a next start reads: the copy of a plain
        stop would be older."""
        self.spool.open_bin_path.unlink(missing_ok=True)

    @property
    def database_shown(self) -> str:
        """The database's URL for the log, its password hidden."""
        return store.shown(store.database_url(self.options.url))

    def status(self) -> HistoryStatus:
        return HistoryStatus(len(self.spool.waiting()), self.spool.dropped)

    def _spool(self, closed: list[ClosedBin]) -> None:
        for done in closed:
            self.closed_bins += 1
            self.spool.put(done.with_names(self._names_of(done.keys)))
            self._wake.set()

    # -- the writer's side -------------------------------------------------------------

    def __enter__(self) -> HistorySink:
        self._thread = threading.Thread(target=self._run, name="ncebpf-history", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, idle_s: float = 10.0, most_s: float = 120.0) -> None:
        """Let the writer send what waits while it gets on with it: until nothing waits, or
        idle_s pass without a bin sent, or most_s in all; then stop it (what is left waits
        on disk for the next start)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        started = last_progress = time.monotonic()
        waiting = len(self.spool.waiting())
        while self._thread.is_alive():
            self._thread.join(1.0)
            self.on_wait()
            now, left = time.monotonic(), len(self.spool.waiting())
            if left < waiting:
                waiting, last_progress = left, now
            if now - last_progress > idle_s or now - started > most_s:
                break
        self.spool.keep_held()
        waiting = len(self.spool.waiting())
        if waiting:
            log.warning("history: %s did not take %s by the stop: %s in %s for the next "
                        "start", self.database_shown, _bins(waiting),
                        "they wait" if waiting > 1 else "it waits", self.spool.directory)
        self._thread = None

    def _run(self) -> None:
        options = self.options
        engine = store.connect(options.url)
        migrated = False
        opened_file = None
        last_try = False  # the stop came during a back-off: one more try, then no more
        delay = RETRY_FIRST_S
        next_roll_up = 0.0
        try:
            while True:
                try:
                    if migrated and store.sqlite_file(options.url) != opened_file:
                        log.warning("history: %s was removed or replaced while ncebpf wrote "
                                    "to it: the next bins go to a new file (what the old "
                                    "one held is gone with it)", self.database_shown)
                        engine.dispose()
                        engine, migrated = store.connect(options.url), False
                    if not migrated:
                        store.migrate(engine)
                        migrated, opened_file = True, store.sqlite_file(options.url)
                    self._send(engine)
                    if time.monotonic() >= next_roll_up or self._stopping.is_set():
                        store.roll_up(engine, options.source, int(time.time()),
                                      options.retention)
                        store.refresh_statistics(engine)
                        next_roll_up = time.monotonic() + ROLL_UP_EVERY_S
                    self._recovered()
                    delay = RETRY_FIRST_S
                    if self._stopping.is_set():
                        if self.spool.waiting():
                            continue  # spooled at the stop, after this pass had looked
                        return
                    self._wake.wait(ROLL_UP_EVERY_S)
                    self._wake.clear()
                except (sa.exc.SQLAlchemyError, store.HistoryError) as exc:
                    self._failed(exc)
                    if self._stopping.wait(delay):
                        if last_try:
                            return
                        # A stop ends the back-off: the database may be back, and a plain
                        # stop may be the last run (close() bounds the wait).
                        last_try = True
                        continue
                    delay = min(2 * delay, RETRY_MAX_S)
        finally:
            engine.dispose()

    def _send(self, engine: sa.Engine) -> None:
        options = self.options
        for pending in self.spool.waiting():
            try:
                entry = self.spool.load(pending)
            except FileNotFoundError:
                continue  # dropped from a full queue meanwhile
            except SpoolError as exc:
                assert isinstance(pending, Path)  # what memory holds is whole
                aside = self.spool.set_aside(pending)
                log.error("history: %s; set aside as %s, not sent", exc, aside)
                continue
            started = time.perf_counter()
            if isinstance(entry, Retraction):
                gone = store.retract(engine, options.source, entry.since, int(time.time()),
                                     options.retention)
                log.info("history: the bins from %s on were written from counts read again "
                         "after the last checkpoint: taken out (%d rows), to be written once",
                         store.when(entry.since), gone)
            else:
                store.write_bin(engine, options.source, entry, int(time.time()),
                                options.retention)
                log.debug("history: the bin of %s (%d peers) written in %.3f s",
                          store.when(entry.start), len(entry), time.perf_counter() - started)
            self.spool.done(pending)
            self._written += 1

    def _failed(self, exc: Exception) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = f"{type(exc).__name__}: {first}"
        waiting = len(self.spool.waiting())
        # Once per error, and again whenever the queue has grown by a day's worth of bins.
        if text != self._error or waiting >= self._said_waiting + 86400 // self.options.bin_s:
            log.warning("history: cannot write to %s (%s); %s %s, trying again every "
                        "%.0f s at most", self.database_shown, text,
                        _bins(waiting, " wait"), self.spool.where(), RETRY_MAX_S)
            self._said_waiting = waiting
        self._error = text
        self._written = 0

    def _recovered(self) -> None:
        if self._error:
            log.info("history: %s takes the bins again: %s written", self.database_shown,
                     _bins(self._written))
        self._error = ""



def _bins(count: int, verb: str = "") -> str:
    """'1 bin waits', '3 bins wait', 'no bin waits' (verb ' wait'); '1 bin', 'no bin'."""
    return f"{count or 'no'} bin{'s' * (count > 1)}" + (verb + "s" * (count <= 1) if verb else "")
