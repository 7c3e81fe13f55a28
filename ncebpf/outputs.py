"""Dumps and checkpoints written off the loop: who waits for which, and when the next starts.

Issue 13 item 4: writing a dump never stops the loop. The loop takes a
snapshot (copies of the table's columns, PeerTable.snapshot_unordered) and
the worker thread (ncebpf.worker) sorts and writes it, while the loop goes on
draining and answering signals, UDP and control requests. The rules:

- One dump is written at a time. Whoever asks while one is written (a
  `ncebpf dump`, a UDP request, USR1, HUP) waits for the next one, whose
  snapshot is taken after the request: nobody is answered with a dump older
  than the question. Everyone who asked meanwhile shares that next dump.
- A dump that fails answers its waiters with its one-line error and is owed:
  the DumpWriter's back-off says when it is tried again (issue 9).
- HUP resets the table only once its dump is written (spec §4.1), and resets
  it to the instant of its snapshot: from the snapshot to the reset the
  drains wait (the kernel's counters are cumulative, so they lose nothing),
  everything else goes on. The counts the dump shows and the counts the new
  period starts with then meet exactly.
- Checkpoints are copied on the loop and saved by the same worker: never two
  at once, in the order taken, so none holds state older than the one before.
  One asked for while one is being saved is taken when that one is done.
- Waiters hear how far a long dump got every PROGRESS_EVERY_S, whatever the
  loop is doing: a turn of the loop that drains a large table (before the next
  dump's snapshot, or between dumps) can take a second, longer than a client
  may wait for a line. The worker tells them as it writes, the loop on its
  turns, and a small thread that lives while anyone waits covers the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ncebpf import checkpoint
from ncebpf.accounting import PeerTable
from ncebpf.config import Instance
from ncebpf.control import DumpClient
from ncebpf.dumpfiles import DumpWriter, OutputError
from ncebpf.listener import DumpListener
from ncebpf.worker import Outcome, Worker

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25  # at most this often, a long dump tells its waiters how far it got


@dataclass(frozen=True)
class WrittenDump:
    """Both files of a dump are in place: directory holds them; current is the dump's
    `current`, the epoch seconds its snapshot was taken."""

    directory: Path
    current: float


class DumpWaiter(Protocol):
    """Someone waiting for a dump; called on the loop's thread. via: who asked, as the
    metrics count requests (control, udp)."""

    via: str

    def progress(self, done: int, total: int) -> None:
        """The dump being written has done of total peers in its current file."""

    def written(self, dump: WrittenDump) -> None:
        """The dump waited for is written."""

    def failed(self, error: str) -> None:
        """The dump waited for could not be written; error is one line."""


@dataclass
class ControlWaiter:
    """An `ncebpf dump` on the control socket: `ok <path>` or `error <line>` (ncebpf.control)."""

    client: DumpClient
    instance: Instance
    via = "control"

    def progress(self, done: int, total: int) -> None:
        self.client.progress(done, total)

    def written(self, dump: WrittenDump) -> None:
        self.client.finish(dump.directory / self.instance.dump_path(self.client.fmt).name)

    def failed(self, error: str) -> None:
        self.client.finish(None, error)


@dataclass
class UdpWaiter:
    """A UDP dump request (spec §4.2): `OK <epoch>` once written, nothing when it failed
    (no OK for a dump that is not there; upstream's client asks again)."""

    listener: DumpListener
    sender: tuple[object, ...]
    via = "udp"

    def progress(self, done: int, total: int) -> None:
        pass  # the protocol has no such line

    def written(self, dump: WrittenDump) -> None:
        self.listener.reply(self.sender, f"OK {int(dump.current)}")

    def failed(self, error: str) -> None:
        pass


@dataclass
class _Flight:
    """The dump being written: who waits for it, and how far the worker got."""

    waiters: list[DumpWaiter]
    reset: bool
    current: float
    done: int = 0
    total: int = 0
    signalled: int = 0  # requests without a waiter (USR1, HUP) this dump answers


@dataclass
class DumpService:
    """The loop's side of the dumps: ask() for one, service() every turn.

    writer writes both files; worker runs the writes; drain brings everything
    counted so far into table (called before each snapshot); after runs on the
    loop once a dump is written (the daemon's checkpoint).
    """

    writer: DumpWriter
    worker: Worker
    table: PeerTable
    drain: Callable[[], None]
    after: Callable[[], None] = lambda: None
    last_written: float = 0.0  # `current` of the last dump written, epoch seconds; 0 = none
    written: int = 0  # dumps written since the start
    # Requests answered, by (via, result): control, udp or signal; written or failed.
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _signalled: int = 0  # requests without a waiter since the last dump started
    _waiting: list[DumpWaiter] = field(default_factory=list)
    _owed: bool = False  # asked for without a waiter (USR1, HUP)
    _reset_owed: bool = False
    _flight: _Flight | None = None
    _next_progress: float = 0.0  # time.monotonic()
    # The loop, the worker and the keep-alive thread all tell progress: one line at a time
    # on a waiter's socket, and the lists of waiters never changed under the one telling.
    _telling: threading.Lock = field(default_factory=threading.Lock)
    _keeping_alive: threading.Thread | None = None  # while anyone waits (under _telling)

    def ask(self, waiter: DumpWaiter | None = None, reset: bool = False) -> None:
        """Owe a dump taken from now on; waiter hears of it; reset: start over once it is
        written (HUP). service() starts it, at once or after the write in flight."""
        if waiter is not None:
            with self._telling:
                self._waiting.append(waiter)
                if self._keeping_alive is None:
                    self._keeping_alive = threading.Thread(
                        target=self._keep_alive, name="ncebpf-dump-waiters", daemon=True)
                    self._keeping_alive.start()
        else:
            self._signalled += 1
        self._owed = True
        self._reset_owed |= reset

    @property
    def writing(self) -> bool:
        return self._flight is not None

    @property
    def holding_drains(self) -> bool:
        """A HUP's dump is being written: the table must stay as its snapshot until the
        reset, so the loop does not drain (the kernel's counters wait, cumulative)."""
        return self._flight is not None and self._flight.reset

    def service(self, now: float) -> None:
        """Each turn of the loop (now: time.monotonic()): start the dump owed (asked for,
        or a retry due) when none is written; keep the waiters of a long one informed."""
        if self._flight is None:
            if self._owed or self.writer.retry_due(now):
                self._start()
        elif now >= self._next_progress:
            self._tell_progress()

    def next_deadline(self) -> float | None:
        """When service() has something to do without a file descriptor waking the loop
        (time.monotonic()), or None."""
        if self._flight is not None:
            return self._next_progress if self._flight.waiters or self._waiting else None
        return self.writer.retry_at()

    def settle(self, tick: Callable[[], None] = lambda: None) -> None:
        """Block until the worker has written everything it was given (a stop: the final
        dump comes after), keeping waiters informed and calling tick between waits;
        then answer the waiters of what was written."""
        while self.worker.busy:
            if not self.worker.wait(PROGRESS_EVERY_S):
                self._tell_progress()
                tick()
            self.worker.collect()

    def take_waiting(self) -> list[DumpWaiter]:
        """The waiters for a dump not started yet (a stop: the final dump answers them)."""
        with self._telling:
            waiting, self._waiting = self._waiting, []
        self._owed, self._reset_owed = False, False
        return waiting

    def _tell_progress(self) -> None:
        """Every waiter hears how far the dump in flight got; (0, 0) between dumps."""
        with self._telling:
            self._next_progress = time.monotonic() + PROGRESS_EVERY_S
            flight = self._flight
            done, total = (flight.done, flight.total) if flight is not None else (0, 0)
            for waiter in self._waiters():
                waiter.progress(done, total)

    def _waiters(self) -> list[DumpWaiter]:
        """Everyone waiting, for the dump in flight or the next (under _telling)."""
        return (self._flight.waiters if self._flight is not None else []) + self._waiting

    def _keep_alive(self) -> None:
        """The keep-alive thread: a line every PROGRESS_EVERY_S to the waiters when neither
        the loop nor the worker told them one; it ends when nobody waits."""
        while True:
            time.sleep(PROGRESS_EVERY_S / 2)
            with self._telling:
                if not self._waiters():
                    self._keeping_alive = None
                    return
            if time.monotonic() >= self._next_progress:
                self._tell_progress()

    def _written_so_far(self, flight: _Flight, done: int, total: int) -> None:
        """The writer's progress callback, on the worker's thread."""
        flight.done, flight.total = done, total
        if time.monotonic() >= self._next_progress:
            self._tell_progress()

    def _start(self) -> None:
        self.drain()
        current = time.time()
        snapshot = self.table.snapshot_unordered()
        # Its size is known now: until the writer's first piece (the key-order sort takes
        # seconds at 1 M peers on a loaded machine) waiters hear (0, total), not silence.
        with self._telling:
            flight = self._flight = _Flight(self._waiting, self._reset_owed, current,
                                            total=len(snapshot), signalled=self._signalled)
            self._waiting = []
        self._signalled = 0
        self._owed, self._reset_owed = False, False
        self._next_progress = time.monotonic() + PROGRESS_EVERY_S
        writer = self.writer
        self.worker.submit(
            lambda: writer.write(snapshot, current,
                                 lambda done, total: self._written_so_far(flight, done, total)),
            self._finished)

    def _finished(self, outcome: Outcome) -> None:
        with self._telling:  # the worker is done: nobody tells this flight's waiters any more
            flight, self._flight = self._flight, None
        assert flight is not None
        result = "failed" if outcome.error is not None else "written"
        self.requests.update([(waiter.via, result) for waiter in flight.waiters]
                             + [("signal", result)] * flight.signalled)
        if isinstance(outcome.error, OutputError):  # the writer logged it
            if flight.reset:
                log.warning("HUP: the dump was not written, so the table was not reset: "
                            "send HUP again to start over")
            for waiter in flight.waiters:
                waiter.failed(f"{outcome.error} (still counting; the dump is retried)")
            return
        if outcome.error is not None:
            raise outcome.error
        self.last_written = flight.current
        self.written += 1
        if flight.reset:
            self.table.reset(int(flight.current))
        written = WrittenDump(Path(outcome.value).parent, flight.current)
        for waiter in flight.waiters:
            waiter.written(written)
        self.after()


@dataclass
class Checkpointer:
    """The table's checkpoint (ncebpf.checkpoint), copied on the loop, saved by the worker.

    save() takes the copy now, or, while a save is in flight, once that one is
    done (a newer copy then); a failure is logged, never raised (counting goes
    on). save_before_evict() writes on the caller's thread, for a drain that is
    about to delete kernel counts only the table holds. Copies are numbered:
    a copy older than the checkpoint on disk is not written, so the file never
    goes back in time. info(at) gives the checkpoint's CheckpointInfo for a
    copy taken at epoch seconds `at`. every_s: the period the loop asks `due`
    about.
    """

    worker: Worker
    table: PeerTable
    path: Path
    info: Callable[[float], checkpoint.CheckpointInfo]
    mode: int
    every_s: float
    # Members the outputs keep in the checkpoint beside the table (the history's open bin).
    extras: Callable[[], checkpoint.Extras] = dict
    next_due: float = 0.0  # time.monotonic()
    closed: bool = False  # the final checkpoint (save_now) follows: take no more
    _in_flight: bool = False
    _owed: bool = False
    _taken: int = 0  # copies numbered so far
    _on_disk: int = 0  # the number of the copy the file holds
    # Held while the file is written: by the worker, or by the loop's eviction checkpoint.
    _writing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.next_due = time.monotonic() + self.every_s

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def save(self) -> None:
        """Checkpoint the table as it is now (or as it is when the save in flight ends)."""
        self.next_due = time.monotonic() + self.every_s
        if self.closed:
            return
        if self._in_flight:
            self._owed = True
            return
        number = self._number()
        arrays = checkpoint.copied_arrays(self.table, self.info(time.time()), self.extras())
        self._in_flight = True
        path, mode, peers = self.path, self.mode, self.table.listed_count
        self.worker.submit(
            lambda: self._write(number, lambda: checkpoint.save_arrays(path, arrays, mode)),
            lambda outcome: self._saved(outcome, peers))

    def save_before_evict(self) -> None:
        """Checkpoint on this thread, from the table itself, before a drain deletes kernel
        entries (Collector's before_evict): once this returns the file holds their counts,
        unless writing failed (logged). Waits for a save in flight on the worker (one
        checkpoint write, 0.2-0.4 s at 1 M peers), which then cannot overwrite this one."""
        self._save_here()
        self.next_due = time.monotonic() + self.every_s

    def save_now(self) -> None:
        """Checkpoint on this thread, from the table itself: at a stop, after settle()."""
        assert not self._in_flight, "save_now() with a save in flight"
        self.closed = True
        self._save_here()

    def _number(self) -> int:
        self._taken += 1
        return self._taken

    def _write(self, number: int, write: Callable[[], float]) -> float | None:
        """Seconds write() took; None when a newer copy is on disk already (not written)."""
        with self._writing:
            if number < self._on_disk:
                return None
            seconds = write()
            self._on_disk = number
            return seconds

    def _save_here(self) -> None:
        number = self._number()
        table, path, mode = self.table, self.path, self.mode
        try:
            seconds = self._write(number, lambda: checkpoint.save(
                path, table, self.info(time.time()), mode, self.extras()))
        except OSError as exc:
            self._failed(exc)
            return
        log.debug("checkpoint of %d peers written in %.3f s", table.listed_count, seconds)

    def _saved(self, outcome: Outcome, peers: int) -> None:
        self._in_flight = False
        if isinstance(outcome.error, OSError):
            self._failed(outcome.error)
        elif outcome.error is not None:
            raise outcome.error
        elif outcome.value is None:
            log.debug("checkpoint copy of %d peers not written: a newer one is on disk", peers)
        else:
            log.debug("checkpoint of %d peers written in %.3f s", peers, outcome.value)
        if self._owed:
            self._owed = False
            self.save()

    def _failed(self, exc: OSError) -> None:
        log.warning("could not write the checkpoint %s: %s (a crash now loses the counts "
                    "since the previous one)", self.path, exc)
