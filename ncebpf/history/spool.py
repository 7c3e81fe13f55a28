"""Closed bins waiting for the database, on disk: a bounded queue that survives restarts.

A database that is down or slow must never hold up counting (issue 14 item
2). Each closed bin goes into the spool directory as one .npz file (the
members of ClosedBin.arrays), written atomically like a checkpoint, named by
a sequence number so that a listing is the order they were closed in. The
writer thread sends them oldest first and removes each file once its
transaction committed; a file sent twice (a crash between the commit and the
removal) replaces its own rows (ncebpf.history.store.write_bin).

The queue holds at most `limit` bins: past that, the oldest go, and say so.
A bin the disk refuses (full, read-only) is held in memory in its place in the
queue: it is sent all the same, and only a crash before that loses it; a stop
tries the disk again. The same directory keeps the open bin of a stopped run
(open-bin.npz) for the next start (ncebpf.history.sink).
"""

from __future__ import annotations

import logging
import threading
import zipfile
from pathlib import Path

import numpy as np

from ncebpf.checkpoint import save_arrays
from ncebpf.dump import write_atomically
from ncebpf.history.bins import ClosedBin, Retraction
from ncebpf.history.store import when

log = logging.getLogger(__name__)

SUFFIX = ".npz"
OPEN_BIN = "open-bin.npz"
DATABASE = "database"  # the URL of the database the last run wrote to
# What memory holds when the disk refuses bins: about 60 B a peer (ClosedBin's columns), so
# 60 MiB at most; beyond it the oldest held bins go, as beyond --history-queue.
HELD_PEERS_MAX = 1_000_000


class SpoolError(Exception):
    """A spooled file cannot be read (damaged): it is set aside, not sent."""


def read_entry(path: Path) -> ClosedBin | Retraction:
    """The closed bin or retraction in a spool file. Raises FileNotFoundError, SpoolError."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if "retract_since" in arrays:
            return Retraction(int(arrays["retract_since"][0]))
        return ClosedBin.from_arrays(arrays)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise SpoolError(f"{path} is unreadable ({exc})") from exc


Entry = ClosedBin | Retraction
Pending = Path | int  # a spooled file, or the number of an entry held in memory


def _number(pending: Pending) -> int:
    return int(pending.stem) if isinstance(pending, Path) else pending


def described(entry: Entry) -> str:
    """What an entry holds, for the log: 'the bin of 2026-11-30 14:05 UTC (3 peers)'."""
    if isinstance(entry, Retraction):
        return f"a retraction of the bins from {when(entry.since)}"
    return f"the bin of {when(entry.start)} ({len(entry)} peers)"


def noted_database(directory: Path) -> str | None:
    """The URL of the database the instance whose spool is `directory` last wrote to
    (Spool.note_database), or None: no run noted one, or this user may not read it."""
    try:
        return (directory / DATABASE).read_text().strip() or None
    except OSError:
        return None


class Spool:
    """The queue of waiting bins: put() on the daemon's loop; waiting(), load() and done()
    on the writer's thread. Files appear by rename and go by unlink, so a listing is
    consistent; the entries held in memory are shared under a lock."""

    def __init__(self, directory: Path, limit: int, mode: int = 0o600) -> None:
        self.directory = directory
        self.limit = limit
        self.mode = mode
        self.dropped = 0  # bins dropped (a full queue, or held in memory at a stop), since start
        self._held: dict[int, Entry] = {}  # by number: what the disk refused
        self._lock = threading.Lock()
        self._refusing = False  # the disk refused the last entry
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = self.waiting()
        self._next = _number(files[-1]) + 1 if files else 1

    def note_database(self, url: str) -> None:
        """Leave the URL the bins go to beside them (readable by this user only: it may
        hold a password), so that `ncebpf report` and `history export` find an
        instance's database without --history, however the daemon was given it."""
        try:
            write_atomically(self.directory / DATABASE, url + "\n", 0o600)
        except OSError as exc:
            log.warning("history: cannot note the database in %s (%s): reports of this "
                        "instance need --history", self.directory, exc.strerror or exc)

    def held(self) -> int:
        """How many waiting entries are in memory (the disk refused them)."""
        with self._lock:
            return len(self._held)

    def where(self) -> str:
        """Where the waiting entries are, for the log: 'in DIR', or 'in DIR and memory (2:
        the disk refuses them)'."""
        held = self.held()
        return f"in {self.directory}" + (
            f" and memory ({held}: the disk refuses them)" if held else "")

    def waiting(self) -> list[Pending]:
        """Everything queued, oldest first: spooled files and entries held in memory."""
        files = [p for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit()]
        with self._lock:
            held = list(self._held)
        return sorted([*files, *held], key=_number)

    def put(self, entry: Entry) -> None:
        """Queue a closed bin or a retraction: on disk (atomically, fsync'd: it outlives a
        crash from here on), else held in memory; drop the oldest beyond the limit."""
        number, self._next = self._next, self._next + 1
        try:
            self._save(number, entry)
        except OSError as exc:
            with self._lock:
                self._held[number] = entry
            if not self._refusing:
                log.warning("history: cannot queue closed bins in %s (%s): they are held in "
                            "memory until the database takes them (a crash would lose them)",
                            self.directory, exc.strerror or exc)
            self._refusing = True
        else:
            if self._refusing:
                log.info("history: closed bins are queued in %s again", self.directory)
            self._refusing = False
        with self._lock:
            held = [(at, len(entry)) for at, entry in self._held.items()
                    if isinstance(entry, ClosedBin)]
        held_peers = sum(peers for _, peers in held)
        for at, peers in held[:-1]:  # oldest first (put in order); the newest stays
            if held_peers <= HELD_PEERS_MAX:
                break
            held_peers -= peers
            self._drop(at, f"more than {HELD_PEERS_MAX} peers' bins are held in memory")
        waiting = self.waiting()
        for old in waiting[:max(0, len(waiting) - self.limit)]:
            self._drop(old, f"{len(waiting)} bins wait for the database, more than "
                            f"--history-queue {self.limit}")

    def _drop(self, pending: Pending, why: str) -> None:
        try:
            span = described(self.load(pending))
        except (FileNotFoundError, SpoolError):
            span = str(pending)
        self.done(pending)
        self.dropped += 1
        log.warning("history: %s: the oldest, %s, is dropped", why, span)

    def _save(self, number: int, entry: Entry) -> None:
        save_arrays(self.directory / f"{number:012d}{SUFFIX}", entry.arrays(), self.mode)

    def load(self, pending: Pending) -> Entry:
        """The entry queued as pending. Raises FileNotFoundError when it is gone (dropped
        meanwhile), SpoolError when its file is damaged."""
        if isinstance(pending, Path):
            return read_entry(pending)
        with self._lock:
            entry = self._held.get(pending)
        if entry is None:
            raise FileNotFoundError(f"queue entry {pending}")
        return entry

    def done(self, pending: Pending) -> None:
        if isinstance(pending, Path):
            pending.unlink(missing_ok=True)
        else:
            with self._lock:
                self._held.pop(pending, None)

    def keep_held(self) -> None:
        """At a stop, the writer gone: put the entries held in memory on disk for the next
        start; those the disk still refuses are lost, and said to be."""
        with self._lock:
            held, self._held = self._held, {}
        for number, entry in sorted(held.items()):
            try:
                self._save(number, entry)
            except OSError as exc:
                self.dropped += 1
                log.error("history: %s waited in memory and cannot be queued in %s (%s): "
                          "it is lost", described(entry), self.directory,
                          exc.strerror or exc)

    def set_aside(self, path: Path) -> Path:
        """Move an unreadable file out of the queue (kept for a look, never sent)."""
        aside = path.with_suffix(".damaged")
        path.rename(aside)
        return aside

    @property
    def open_bin_path(self) -> Path:
        return self.directory / OPEN_BIN
