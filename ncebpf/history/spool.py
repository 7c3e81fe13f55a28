"""Closed bins waiting for the database, on disk: a bounded queue that survives restarts.

A database that is down or slow must never hold up counting (issue 14 item
2). Each closed bin goes into the spool directory as one .npz file (the
members of ClosedBin.arrays), written atomically like a checkpoint, named by
a sequence number so that a listing is the order they were closed in. The
writer thread sends them oldest first and removes each file once its
transaction committed; a file sent twice (a crash between the commit and the
removal) replaces its own rows (ncebpf.history.store.write_bin).

The queue holds at most `limit` bins: past that, the oldest go, and say so.
The same directory keeps the open bin of a stopped run (open-bin.npz) for the
next start (ncebpf.history.sink).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from ncebpf.checkpoint import save_arrays
from ncebpf.history.bins import ClosedBin, Retraction
from ncebpf.history.store import when

log = logging.getLogger(__name__)

SUFFIX = ".npz"
OPEN_BIN = "open-bin.npz"


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


def _span(path: Path) -> str:
    """What a spooled file holds, for the log: 'the bin of 2026-11-30 14:05 UTC'."""
    try:
        entry = read_entry(path)
    except (OSError, SpoolError):
        return path.name
    if isinstance(entry, Retraction):
        return f"a retraction of the bins from {when(entry.since)}"
    return f"the bin of {when(entry.start)} ({len(entry)} peers)"


class Spool:
    """The directory of waiting bins. put() on the daemon's loop, waiting()/done() on the
    writer's thread: they share nothing but the directory (a listing is consistent:
    files appear by rename and go by unlink)."""

    def __init__(self, directory: Path, limit: int, mode: int = 0o600) -> None:
        self.directory = directory
        self.limit = limit
        self.mode = mode
        self.dropped = 0  # bins dropped because the queue was full, since the start
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = self.waiting()
        self._next = int(files[-1].stem) + 1 if files else 1

    def waiting(self) -> list[Path]:
        """The spooled bins, oldest first."""
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def put(self, entry: ClosedBin | Retraction) -> None:
        """Queue a closed bin or a retraction (atomically, fsync'd: it outlives a crash from
        here on); drop the oldest bins beyond the limit. Raises OSError when it cannot be
        written."""
        path = self.directory / f"{self._next:012d}{SUFFIX}"
        self._next += 1
        save_arrays(path, entry.arrays(), self.mode)
        waiting = self.waiting()
        for old in waiting[:max(0, len(waiting) - self.limit)]:
            try:
                span = _span(old)
            finally:
                old.unlink(missing_ok=True)
            self.dropped += 1
            log.warning("history: %d bins wait for the database, more than --history-queue "
                        "%d: the oldest, %s, is dropped", len(waiting), self.limit, span)

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def set_aside(self, path: Path) -> Path:
        """Move an unreadable file out of the queue (kept for a look, never sent)."""
        aside = path.with_suffix(".damaged")
        path.rename(aside)
        return aside

    @property
    def open_bin_path(self) -> Path:
        return self.directory / OPEN_BIN
