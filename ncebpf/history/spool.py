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
from ncebpf.history.bins import ClosedBin

log = logging.getLogger(__name__)

SUFFIX = ".npz"
OPEN_BIN = "open-bin.npz"


class SpoolError(Exception):
    """A spooled file cannot be read (damaged): it is set aside, not sent."""


def read_bin(path: Path) -> ClosedBin:
    """The closed bin in a spool file. Raises FileNotFoundError, or SpoolError."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            return ClosedBin.from_arrays({name: archive[name] for name in archive.files})
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise SpoolError(f"{path} is unreadable ({exc})") from exc


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

    def put(self, closed: ClosedBin) -> None:
        """Queue a closed bin (atomically, fsync'd: it outlives a crash from here on);
        drop the oldest bins beyond the limit. Raises OSError when it cannot be written."""
        path = self.directory / f"{self._next:012d}{SUFFIX}"
        self._next += 1
        save_arrays(path, closed.arrays(), self.mode)
        waiting = self.waiting()
        for old in waiting[:max(0, len(waiting) - self.limit)]:
            old.unlink(missing_ok=True)
            self.dropped += 1
            log.warning("history: %d bins wait for the database, more than --history-queue "
                        "%d: the oldest (%s) is dropped", len(waiting), self.limit, old.name)

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
