"""Write an instance's dump files, and survive when that fails.

A dump that cannot be written (a full disk, a state directory moved away, a
read-only remount) must never cost a count: the table stays in memory and
the kernel counters are cumulative, so the daemon reports the error in one
line, keeps counting and tries again later (issue 9). Only the final dump
at exit has no later: when the state directory refuses it, it goes to the
first fallback directory that takes it, and the caller says where.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ncebpf.accounting import PeerTable, TableSnapshot
from ncebpf.config import Instance
from ncebpf.dump import FORMATS, DumpContext, frozen, pieces, write_atomically
from ncebpf.errors import NcebpfError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (peers written, peers in the table)
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0
# Where the final dump goes when the state directory refuses it: the pid
# directory (on Debian a tmpfs, rarely full at the same time) and then the
# one directory the FHS keeps across reboots for temporary files.
FALLBACK_DIRS = (Path("/var/tmp"),)


class OutputError(NcebpfError):
    """An output could not be written; the message is one line naming the file."""


def describe(exc: OSError, path: Path) -> str:
    """`could not write PATH: No space left on device` — the real error, one line, naming
    the file the user knows (not the scratch file beside it)."""
    return f"could not write {path}: {exc.strerror or exc}"


def scratch_files(instance: Instance) -> list[Path]:
    """Scratch files of this instance's dumps that a killed run left half written.

    Only the holder of the instance lock may remove them: a live run's are in use.
    """
    found: list[Path] = []
    for fmt in FORMATS:
        target = instance.dump_path(fmt)
        found += target.parent.glob(f".{target.name}.*")
    return found


@dataclass(frozen=True)
class FinalDump:
    path: Path  # the JSON dump
    refused: str = ""  # why the state directory did not take it, when it did not


class DumpWriter:
    """Both dump files of one instance (JSON and Perl), with retries after a failure.

    `write` logs a failure, raises OutputError and owes a dump; the daemon
    calls `retry_due` each turn and writes again when it says so, backing off
    from RETRY_FIRST_S to RETRY_MAX_S. `mode` is the files' permission bits.
    The daemon calls `write` on its writer thread (ncebpf.outputs) and reads
    `failures` and `retry_due` only while no write is in flight.
    """

    def __init__(self, instance: Instance, context: DumpContext, mode: int = 0o644) -> None:
        self.instance = instance
        self.context = context
        self.mode = mode
        self.failures = 0  # consecutive failed writes; 0 = nothing owed
        self._next_retry = 0.0  # time.monotonic()

    def write(self, table: PeerTable | TableSnapshot, now: float, progress: Progress) -> Path:
        """Write both files of table (or of a snapshot of it) into the state directory;
        return the JSON one. now is the dumps' `current`, epoch seconds."""
        try:
            path = self._write_into(self.instance.statedir, table, now, progress)
        except OutputError as exc:
            self.failures += 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (self.failures - 1))
            self._next_retry = time.monotonic() + delay
            log.error("%s; still counting, next try in %.0f s", exc, delay)
            raise
        if self.failures:
            log.info("dump written to %s after %d failed %s", path.parent, self.failures,
                     "try" if self.failures == 1 else "tries")
        self.failures = 0
        return path

    def retry_due(self, monotonic_now: float) -> bool:
        """The last write failed, and it is time to try again."""
        return self.failures > 0 and monotonic_now >= self._next_retry

    def retry_at(self) -> float | None:
        """When the owed dump is to be tried again (time.monotonic()); None when none is owed."""
        return self._next_retry if self.failures else None

    def write_final(self, table: PeerTable, now: float, progress: Progress) -> FinalDump:
        """The last dump of a run: the state directory, else the first fallback that works.

        Raises OutputError naming every place tried when none took it.
        """
        refusals = []
        for directory in (self.instance.statedir, self.instance.piddir, *FALLBACK_DIRS):
            try:
                path = self._write_into(directory, table, now, progress)
            except OutputError as exc:
                refusals.append(str(exc))
                continue
            return FinalDump(path, refusals[0] if refusals else "")
        raise OutputError("; ".join(refusals))

    def _write_into(self, directory: Path, table: PeerTable | TableSnapshot, now: float,
                    progress: Progress) -> Path:
        snapshot = frozen(table)  # both files of one instant, whatever happens meanwhile
        total = len(snapshot)
        for fmt in FORMATS:
            path = directory / self.instance.dump_path(fmt).name
            try:
                write_atomically(path, _reporting(pieces(fmt, snapshot, self.context, now),
                                                  total, progress), self.mode)
            except OSError as exc:
                raise OutputError(describe(exc, path)) from exc
        return directory / self.instance.json_path.name


def _reporting(texts: Iterator[tuple[str, int]], total: int,
               progress: Progress) -> Iterator[str]:
    for text, done in texts:
        yield text
        progress(done, total)


def file_mode(umask: int) -> int:
    """Permission bits of a file created under umask (as open(2) with 0666 would)."""
    return 0o666 & ~umask & 0o777


def shared_directory(path: Path) -> str:
    """Why others could plant files in path ("" when they cannot): for a start-up warning."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if st.st_mode & 0o002:
        return "writable by every user"
    if st.st_mode & 0o020 and st.st_gid != os.getegid() and st.st_gid != 0:
        return f"writable by group {st.st_gid}"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}"
    return ""
