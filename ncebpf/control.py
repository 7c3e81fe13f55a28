"""The control socket through which commands talk to a running instance.

A Unix stream socket at <piddir>/<name>.sock. The client sends one line,
``dump <format>``; the daemon drains, writes the dump, and only then answers
``ok <path>`` (or ``error <message>``), after ``progress <done> <total>``
lines while a large table is written. ``changes [<cursor>|- [<max age s>]]``
(`ncebpf top`) is answered with the counters that moved since the cursor, at
most max age seconds old (a drain first when they are older), in the format
of ncebpf.top.wire, and writes no file. A socket that accepts connections is
also how we know an instance is running: a pid file can outlive its process
and its pid can be reused, a listening socket cannot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import struct
import time
from pathlib import Path
from types import TracebackType

from ncebpf.config import Instance
from ncebpf.dump import FORMATS
from ncebpf.errors import NcebpfError, NotRunning

REQUEST_TIMEOUT_S = 2.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_LINE = 512


def _connect(path: Path, timeout: float) -> socket.socket | None:
    """A connection to a live instance, or None when nothing listens at path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ECONNREFUSED, errno.ENOTSOCK):
            return None
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return sock


def is_running(instance: Instance) -> bool:
    sock = _connect(instance.control_path, REQUEST_TIMEOUT_S)
    if sock is None:
        return False
    sock.close()
    return True


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_LINE:
        chunk = sock.recv(MAX_LINE)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def request_dump(instance: Instance, fmt: str, timeout_s: float) -> Path:
    """Ask the running instance for a fresh dump; return its path once written.

    The instance drains, writes, and answers `ok <path>`; while it writes a
    large table it sends `progress <peers written> <peers>` lines, so
    timeout_s bounds the silence between two lines, not the whole dump.
    Raises NotRunning when nothing listens, NcebpfError with the instance's
    own one-line reason when it could not write the dump.
    """
    sock = _connect(instance.control_path, timeout_s)
    if sock is None:
        raise NotRunning(
            f"no ncebpf instance named {instance.name!r} is running (nothing listens on "
            f"{instance.control_path}): start one with 'ncebpf attach --iface IFACE', "
            "with the same --name and --piddir"
        )
    with sock:
        _check_peer(sock, instance)
        try:
            sock.sendall(f"dump {fmt}\n".encode())
            reply = "progress"
            while reply.startswith("progress"):
                reply = _read_line(sock)
        except TimeoutError:
            raise NcebpfError(f"instance {instance.name!r} said nothing for {timeout_s:g} s "
                              "while writing the dump: see its log "
                              f"{instance.log_path}, or give a longer --timeout") from None
        except (ConnectionResetError, BrokenPipeError):
            reply = ""
    status, _, detail = reply.partition(" ")
    if not reply:
        raise NcebpfError(f"instance {instance.name!r} closed the connection without "
                          f"answering; it may have died: see 'ncebpf status --name "
                          f"{instance.name}' and its log {instance.log_path}")
    if status != "ok":
        raise NcebpfError(f"instance {instance.name!r} could not dump: {detail or reply}")
    return Path(detail)


def _check_peer(sock: socket.socket, instance: Instance) -> None:
    """Only root or our own user may answer for an instance: in a pid directory others can
    write, anyone could listen at the socket's path and hand us any file to print."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _ = _UCRED.unpack(creds)
    if uid not in (0, os.geteuid()):
        raise NcebpfError(f"{instance.control_path} is held by uid {uid} (pid {pid}), not by "
                          "an ncebpf instance: remove it, and give ncebpf a pid directory of "
                          "its own")


class DumpClient:
    """One `ncebpf dump` waiting on the control socket for the dump it asked for."""

    def __init__(self, conn: socket.socket, fmt: str) -> None:
        self.conn = conn
        self.fmt = fmt

    def _say(self, line: str) -> None:
        # A client that went away must not disturb the daemon.
        with contextlib.suppress(OSError):
            self.conn.sendall(line.encode() + b"\n")

    def progress(self, done: int, total: int) -> None:
        self._say(f"progress {done} {total}")

    def finish(self, path: Path | None, error: str = "") -> None:
        """Answer `ok <path>`, or `error <one line>` when path is None; then hang up."""
        self._say(f"ok {path}" if path is not None else f"error {error}")
        self.conn.close()


class ChangesRequest:
    """One `ncebpf top` asking for the counters that moved since its cursor
    (ncebpf.top.serve answers it)."""

    def __init__(self, conn: socket.socket, cursor: str, max_age_s: float | None = None) -> None:
        self.conn = conn
        self.cursor = cursor  # "" for none
        self.max_age_s = max_age_s  # how old the counts may be; None: the daemon's choice

    def refuse(self, error: str) -> None:
        """Answer `error <one line>` and hang up."""
        with contextlib.suppress(OSError):
            self.conn.sendall(f"error {error}\n".encode())
        self.conn.close()


_CHANGES = re.compile(r"(?:([0-9a-f]{1,16}:[0-9]{1,20}|-)(?: ([0-9]{1,6}(?:\.[0-9]{1,3})?))?)?")


class _Reading:
    """A connection whose request line has not fully arrived yet."""

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.data = b""
        self.deadline = deadline  # time.monotonic()


class ControlServer:
    """The daemon's end; a context manager that removes the socket it made.

    Nothing here ever blocks the daemon: connections are accepted and read
    without blocking, a request line may arrive in pieces, and a client that
    has not sent its line within REQUEST_TIMEOUT_S is dropped. The daemon
    selects on `fds()` and calls `requests()` when one is ready.
    """

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.path = instance.control_path
        self._sock: socket.socket | None = None
        self._inode = 0
        self._reading: dict[int, _Reading] = {}

    def __enter__(self) -> ControlServer:
        # Only the holder of the instance lock gets here: a socket at the path is a
        # leftover of a run that was killed.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self._inode = self.path.stat().st_ino
        return self

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def fds(self) -> list[int]:
        """The listening socket and every connection still sending its request."""
        return [self.fileno(), *self._reading]

    def next_deadline(self) -> float | None:
        """When requests() must run to drop a client that is too slow (time.monotonic())."""
        return min((r.deadline for r in self._reading.values()), default=None)

    def requests(self) -> list[DumpClient | ChangesRequest]:
        """Every client whose request line has arrived; never blocks.

        A request other than `dump <format>` or `changes [<cursor>]` is answered with
        an error at once; a client silent past its deadline is dropped.
        """
        assert self._sock is not None
        now = time.monotonic()
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.setblocking(False)
            self._reading[conn.fileno()] = _Reading(conn, now + REQUEST_TIMEOUT_S)
        clients: list[DumpClient | ChangesRequest] = []
        for fd, reading in list(self._reading.items()):
            line = self._read_some(reading)
            if line is None and now < reading.deadline:
                continue
            del self._reading[fd]
            if line is None:  # gone, or too slow: a stalled client must not stall counting
                reading.conn.close()
                continue
            verb, _, fmt = line.partition(" ")
            client = DumpClient(reading.conn, fmt)
            if verb == "dump" and fmt in FORMATS:
                clients.append(client)
            elif verb == "changes" and (changes := _CHANGES.fullmatch(fmt)):
                cursor, max_age = changes.groups()
                clients.append(ChangesRequest(reading.conn, "" if cursor in (None, "-")
                                              else cursor,
                                              float(max_age) if max_age else None))
            else:
                client.finish(None, f"unknown request {line[:40]!r}")
        return clients

    @staticmethod
    def _read_some(reading: _Reading) -> str | None:
        """The request line once whole; None while it is incomplete or the client left."""
        try:
            while not reading.data.endswith(b"\n") and len(reading.data) < MAX_LINE:
                chunk = reading.conn.recv(MAX_LINE)
                if not chunk:
                    reading.deadline = 0.0  # hung up
                    break
                reading.data += chunk
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            reading.deadline = 0.0
        if reading.data.endswith(b"\n") or len(reading.data) >= MAX_LINE:
            return reading.data.decode(errors="replace").strip()
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for reading in self._reading.values():
            reading.conn.close()
        self._reading.clear()
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
