"""Who owns an instance name, and who owns an interface's hooks.

Both locks are held through a file descriptor, so the kernel releases them
when their holder dies, however it dies (`kill -9`, the OOM killer): no
stale state can hold them, and a program or pid file is a leftover exactly
when nobody holds the lock that guards it.

The instance lock is an open file description lock (fcntl F_OFD_SETLK) on
``<piddir>/<name>.lock``; the file holds the holder's pid. Unlike flock(2),
an OFD lock can be tested without taking it (F_OFD_GETLK), so `status` never
makes a concurrent `start` fail; unlike a POSIX record lock it is not lost
when the process closes some other descriptor of the same file. The file is
never removed: removing a lock file races with a process that has it open.

The interface lock is a Unix socket bound to the abstract address
``ncebpf/iface/<ifindex>``. Abstract addresses belong to the network
namespace, as interface indexes do (unix(7)); bind(2) fails with EADDRINUSE
while a live socket holds the address. The holder listens, so a refused
process can connect and learn the holder's pid from SO_PEERCRED (the
kernel's word, not the holder's) and its instance name from the one line
that a small thread of the holder answers every connection with.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ncebpf.config import Instance
from ncebpf.errors import InstanceRunning, NcebpfError, UsageError
from ncebpf.files import not_our_own
from ncebpf.kernel.netif import ifindex_of

log = logging.getLogger(__name__)

# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = struct.Struct("hhqqi4x")
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
HOLDER_WAIT_S = 1.0  # a lock holder writes its pid right after locking
OWNER_TIMEOUT_S = 2.0  # for the owner's line; it comes from a thread that does nothing else


def lock_path(instance: Instance) -> Path:
    """``<piddir>/<name>.lock``: whoever holds its lock is the running instance."""
    return instance.piddir / f"{instance.name}.lock"


def _flock(kind: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0)  # the whole file


class InstanceLock:
    """Hold the instance's name for the block; raise InstanceRunning if a live process has it.

    Take it before anything is compiled, attached or written: a second run of
    the same name then fails before it can touch what the first one owns.
    """

    def __init__(self, instance: Instance, tidying: bool = False) -> None:
        self.instance = instance
        self.path = lock_path(instance)
        # A command removing a dead run's remains holds the lock too, but is no instance:
        # it writes its pid negated, and instance_holder() does not call it running.
        self.tidying = tidying
        self._fd: int | None = None

    def __enter__(self) -> InstanceLock:
        # O_NOFOLLOW: a symbolic link planted in the pid directory is refused, not followed.
        # O_NONBLOCK: a FIFO planted at the name must not block us (it is refused below).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC |
                     os.O_NONBLOCK, 0o644)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK))
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise already_running(self.instance, instance_holder(self.instance)) from None
        # Truncated and written below: never someone else's file linked in here.
        if problem := not_our_own(fd):
            os.close(fd)
            raise NcebpfError(f"refusing to lock {self.path}: {problem}; remove it, and give "
                              "ncebpf a pid directory of its own")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{-os.getpid() if self.tidying else os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the lock
            self._fd = None


def already_running(instance: Instance, pid: int | None) -> InstanceRunning:
    """The one refusal of a second run of a name, whoever notices it first."""
    return InstanceRunning(f"an ncebpf instance named {instance.name!r} is already running"
                           f"{f' (pid {pid})' if pid else ''}: stop it, or choose another --name")


def instance_holder(instance: Instance) -> int | None:
    """The pid of the live process that holds the instance lock; None when nobody does.

    Never takes the lock, so it cannot make a concurrent start fail.
    """
    try:
        fd = os.open(lock_path(instance), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC |
                     os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NcebpfError(f"{lock_path(instance)} is not a plain file: remove it, and give "
                          "ncebpf a pid directory of its own")
    try:
        deadline = time.monotonic() + HOLDER_WAIT_S
        while True:
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK))
            if _FLOCK.unpack(answer)[0] == fcntl.F_UNLCK:
                return None
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text.isdigit():
                return int(text)
            if text.startswith("-") and text[1:].isdigit():
                return None  # a command tidying up after a dead run: nothing runs
            if time.monotonic() >= deadline:
                raise NcebpfError(f"{lock_path(instance)} is locked, but its holder has not "
                                  "written its pid: try again in a moment")
            time.sleep(0.01)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Owner:
    """The live process that holds an interface, as it describes itself."""

    pid: int
    name: str  # its instance name; '' when it did not say
    counting: bool  # False: a `stop` or `detach` that is cleaning up for a moment
    ncebpf: bool = True  # False: an abstract address carries no permissions, anyone may bind it

    def describe(self) -> str:
        who = f"ncebpf instance {self.name!r}" if self.name else "an ncebpf instance"
        return f"{who} (pid {self.pid})"


class InterfaceBusy(UsageError):
    """Another live process holds the interface's lock (exit 2)."""

    def __init__(self, ifname: str, owner: Owner | None) -> None:
        self.ifname = ifname
        self.owner = owner
        if owner is not None and not owner.ncebpf:
            text = (f"pid {owner.pid}, which is not ncebpf, holds ncebpf's lock on {ifname} "
                    "(an abstract Unix socket, see 'ss -xlp | grep ncebpf/iface'): "
                    "stop that process")
        elif owner is not None and not owner.counting:
            text = (f"{ifname} is being cleaned up by ncebpf (pid {owner.pid}): "
                    "try again in a moment")
        else:
            text = (f"{ifname} is already counted by {describe(owner)}: stop it first "
                    f"({stop_command(owner)}), or count with --mode pcap, which attaches nothing")
        super().__init__(text)


def describe(owner: Owner | None) -> str:
    """The owner in words: "ncebpf instance 'a' (pid 12)"."""
    return owner.describe() if owner is not None else "another ncebpf instance"


def stop_command(owner: Owner | None) -> str:
    return f"'ncebpf stop --name {owner.name}'" if owner and owner.name else \
        "'ncebpf stop --name NAME'"


def _address(ifindex: int) -> str:
    return f"\0ncebpf/iface/{ifindex}"


def interface_owner(ifindex: int) -> Owner | None:
    """Who holds the lock of the interface ifindex (in this network namespace), or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(OWNER_TIMEOUT_S)
    with sock:
        try:
            sock.connect(_address(ifindex))
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
            return None  # free, or bound and not yet listening: the caller retries
        pid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _UCRED.size))[0]
        line = b""
        with contextlib.suppress(OSError):
            while not line.endswith(b"\n") and len(line) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                line += chunk
    role, _, name = line.decode(errors="replace").strip().partition(" ")
    return Owner(pid, name, role != "cleaning",
                 ncebpf=role in ("counting", "cleaning") and _runs_ncebpf(pid))


def _runs_ncebpf(pid: int) -> bool:
    try:
        return b"ncebpf" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class InterfaceLock:
    """Hold ifname's hooks for the block; raise InterfaceBusy if a live process holds them.

    With it held, an ncebpf program found on the interface is a leftover of
    a dead run: no live instance can be using it. `counting` False marks a
    short clean-up (stop, detach) rather than an instance.
    """

    def __init__(self, ifname: str, name: str, counting: bool = True) -> None:
        self.ifname = ifname
        self.ifindex = ifindex_of(ifname)
        self._line = f"{'counting' if counting else 'cleaning'} {name}\n".encode()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> InterfaceLock:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind(sock)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._answer, args=(sock,), daemon=True,
                                        name=f"ncebpf-iface-{self.ifindex}")
        self._thread.start()
        return self

    def _bind(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + HOLDER_WAIT_S
        while True:
            try:
                sock.bind(_address(self.ifindex))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            owner = interface_owner(self.ifindex)
            if owner is not None or time.monotonic() >= deadline:
                raise InterfaceBusy(self.ifname, owner)
            time.sleep(0.02)  # the holder has bound but not listened yet, or has just gone

    def _answer(self, sock: socket.socket) -> None:
        """Tell each caller who holds the interface; accepting also keeps the backlog empty."""
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # shut down on exit
            with conn, contextlib.suppress(OSError):
                conn.settimeout(OWNER_TIMEOUT_S)
                conn.sendall(self._line)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        if self._thread is not None:
            self._thread.join(OWNER_TIMEOUT_S)
        self._sock.close()
        self._sock = None
