"""One thread that writes outputs off the daemon's loop (issue 13, item 4).

A dump of a million peers takes seconds to render and write; a checkpoint
seconds to write and fsync. The loop hands such work to a Worker as a job
(a callable working on copies the loop took: it never touches live state)
and goes on draining and answering. Jobs run one at a time, in the order
they were given, so two writes never overlap and a later job's output never
lands before an earlier one's.

What a job returned or raised comes back to the loop's thread: the loop
selects on `fileno()` and calls `collect()`, which runs each finished job's
callback there. A callback is therefore free to touch the table, the
sockets and the other loop-side objects without locks.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What a job returned (value), or the exception it raised (error)."""

    value: Any = None
    error: BaseException | None = None


Job = Callable[[], Any]
Done = Callable[[Outcome], None]


class Worker:
    """A context manager: the thread starts on entry and, on exit, finishes the jobs it
    was given (a dump or a checkpoint is never cut off halfway) and ends.

    submit() queues a job with the callback that collect() will call with its
    Outcome, on the caller's thread. An exception a job raises is handed to its
    callback; an exception a callback raises propagates out of collect().
    """

    def __init__(self, name: str = "ncebpf-writer") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()  # None: end
        self._finished: queue.SimpleQueue[tuple[Done, Outcome]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._unfinished = 0  # submitted, not yet run to its end (guarded by _idle)
        self._uncollected = 0  # submitted, callback not yet called (the caller's thread only)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)  # one byte is enough to wake the loop
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Worker:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def fileno(self) -> int:
        """Readable when a job has finished and collect() has something to do."""
        return self._wake_reader.fileno()

    @property
    def busy(self) -> bool:
        """A job was given whose callback has not run yet."""
        return self._uncollected > 0

    def submit(self, job: Job, done: Done) -> None:
        """Run job after every job given before it; done(outcome) runs in collect()."""
        assert self._thread is not None, "submit() before the worker started"
        with self._idle:
            self._unfinished += 1
        self._uncollected += 1
        self._jobs.put((job, done))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job given so far has run (not collected); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def collect(self) -> None:
        """Call the callback of every job that has finished, in the order they ran."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass
        while True:
            try:
                done, outcome = self._finished.get_nowait()
            except queue.Empty:
                return
            self._uncollected -= 1
            done(outcome)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, done = item
            try:
                outcome = Outcome(value=job())
            except BaseException as exc:  # noqa: BLE001 - the loop decides what it means
                outcome = Outcome(error=exc)
            self._finished.put((done, outcome))
            # The job holds its copies (a dump's snapshot: 100 MB at 1 M peers): let them
            # go now, not when the next job arrives.
            del item, job, done, outcome
            with self._idle:
                self._unfinished -= 1
                self._idle.notify_all()
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_writer.send(b"\0")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        self._wake_reader.close()
        self._wake_writer.close()
