"""start, stop, restart and status of a background instance, with its pid file.

Fixes upstream §15.20: `start` returns only once the daemon counts (or
with its error), in its own session, with absolute paths; `stop` waits and
escalates to SIGKILL, then removes what the killed process left attached;
`status` exits 3 when not running, as init scripts expect. Whether an
instance runs is the kernel's word: it runs while a process holds its
instance lock (ncebpf.locks), never because a pid file says so. One that
died (kill -9, the OOM killer) is seen by `status` and cleaned by `stop`
(ncebpf.remains).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from ncebpf.config import Instance, RunConfig
from ncebpf.dump import write_atomically
from ncebpf.errors import InstanceRunning, NcebpfError, PrivilegeError, UsageError
from ncebpf.files import not_our_own, read_small_file

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def read_pid(path: Path) -> int | None:
    text = (read_small_file(path) or "").strip()
    return int(text) if text.isdigit() else None


def is_ncebpf_process(pid: int) -> bool:
    """Alive (not a zombie) and running ncebpf: a reused pid is not ours."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"ncebpf" in cmdline


def running_pid(instance: Instance) -> int | None:
    """The pid of the running instance: the live holder of its lock; None when there is none."""
    from ncebpf.locks import instance_holder

    return instance_holder(instance)


def _report(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def _read_report(fd: int, timeout_s: float) -> str:
    """What the daemon wrote before closing its end of the pipe."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data.decode(errors="replace").strip()


def open_log(path: Path) -> int:
    """Open the daemon's log for appending, refusing anything but our own plain file.

    The state directory may be writable by others: a link planted at the log's
    name must not make root append to the file it points at (O_NOFOLLOW), and
    a hard link to someone else's file is refused by its owner and link count.
    """
    try:
        # O_NONBLOCK: a FIFO planted at the name fails at once (ENXIO) instead of
        # blocking the start until someone reads it; cleared below for a plain file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW |
                     os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            what = "a symbolic link" if exc.errno == errno.ELOOP else "a FIFO"
            raise NcebpfError(f"refusing to log to {path}: it is {what}; remove it, "
                              "and give ncebpf a state directory of its own") from None
        raise
    if problem := not_our_own(fd):
        os.close(fd)
        raise NcebpfError(f"refusing to log to {path}: {problem}; remove it, and give "
                          "ncebpf a state directory of its own")
    os.set_blocking(fd, True)
    return fd


def _become_daemon(log_path: Path, umask: int) -> None:
    """Second half of the double fork: own session, no terminal, stdio to the log."""
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(umask)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _log_to(log_path)


def _log_to(log_path: Path) -> None:
    logfile = open_log(log_path)
    os.dup2(logfile, 1)
    os.dup2(logfile, 2)
    os.close(logfile)


def follow_log(log_path: Path) -> None:
    """Open the log anew when it was removed or renamed (logrotate without copytruncate):
    otherwise every later line would go to a file nobody can see. Never raises."""
    try:
        current = os.fstat(2)
        on_disk = os.stat(log_path, follow_symlinks=False)
        if current.st_nlink and (on_disk.st_dev, on_disk.st_ino) == \
                (current.st_dev, current.st_ino):
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        _log_to(log_path)
    except (OSError, NcebpfError) as exc:
        log.warning("could not open the log %s anew: %s", log_path, exc)
        return
    log.info("log %s opened anew (it was moved or removed)", log_path)


def start(config: RunConfig) -> int:
    """Run the instance in the background; return its pid once it is counting."""
    from ncebpf.daemon import Daemon
    from ncebpf.locks import already_running

    instance = config.instance
    pid = running_pid(instance)
    if pid is not None:
        raise already_running(instance, pid)
    reader, writer = os.pipe()
    child = os.fork()
    if child:
        os.close(writer)
        report = _read_report(reader, START_TIMEOUT_S)
        os.waitpid(child, 0)
        status, _, detail = report.partition(" ")
        if status == "ok" and detail.isdigit():
            return int(detail)
        if status == "usage" and detail:  # exit 2 then, as attach would
            raise UsageError(detail)
        raise NcebpfError(detail if status == "error" and detail else
                          f"the daemon did not start; see {instance.log_path}")
    os.close(reader)
    code = 1
    outcome: str | None = ""  # None: nothing to tell `stop`, the name was another run's
    instance.outcome_path.unlink(missing_ok=True)
    try:
        _become_daemon(instance.log_path, config.umask)
        final = Daemon(config, on_ready=lambda: _report(writer, f"ok {os.getpid()}"),
                       on_drain=lambda: follow_log(instance.log_path)).run()
        code, outcome = 0, f"final dump in {final}"
    except NcebpfError as exc:
        log.error("%s", exc)
        _report(writer, f"{'usage' if isinstance(exc, UsageError) else 'error'} {exc}")
        code, outcome = exc.exit_code, str(exc)
        if isinstance(exc, InstanceRunning):
            outcome = None  # the name, and its outcome file, belong to the run that has it
    except BaseException as exc:  # the parent must hear of it, whatever it was
        with contextlib.suppress(OSError):
            traceback.print_exc()
        _report(writer, f"error {type(exc).__name__}: {exc}")
        outcome = f"{type(exc).__name__}: {exc} (see {instance.log_path})"
    finally:
        # For `stop`, which is not our parent: how the run ended, and where the counts went.
        if outcome is not None:
            with contextlib.suppress(OSError):
                write_atomically(instance.outcome_path, f"{code} {outcome}\n")
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os._exit(code)


def stop(instance: Instance, timeout_s: float = STOP_TIMEOUT_S, keep: bool = False) -> str:
    """Stop the instance; what happened, in words.

    SIGTERM, then wait for as long as the daemon makes progress — its final
    drain and dump of a large table can take minutes, and killing it then
    would lose every count. SIGKILL only after timeout_s in which it neither
    wrote nor used CPU. Raises NcebpfError (exit 1) when it had to kill, or
    when the daemon could not write its final dump where it belongs; the
    message says where the counts went.

    keep (`stop --keep`, `restart`): SIGUSR2 instead; the daemon writes its final
    dump and checkpoint and leaves its programs counting into the pinned maps,
    for the next `start` to take over without losing a count (issue 13, item 1).
    """
    pid = running_pid(instance)
    if pid is None:
        if keep:
            return f"{instance.name} not running: nothing to keep (the next start takes " \
                "over whatever still counts)"
        return _remove_remains(instance)
    _signal(instance, pid, signal.SIGUSR2 if keep else signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        _wait_released(instance)
        outcome = _read_outcome(instance)
        if outcome and not outcome.startswith("0 "):
            raise NcebpfError(f"{instance.name} stopped (pid {pid}), but: "
                              f"{outcome.partition(' ')[2]}")
        return f"{instance.name} stopped (pid {pid})" + \
            (f"; {outcome.partition(' ')[2]}" if outcome else "")
    _signal(instance, pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    _wait_released(instance)
    removed = _clean_up_after_kill(instance)
    raise NcebpfError(f"{instance.name} (pid {pid}) made no progress for {timeout_s:g} s after "
                      "SIGTERM and was killed: its counts since the last dump are lost"
                      f"{'; removed ' + removed if removed else ''}")


def _signal(instance: Instance, pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except PermissionError:
        raise PrivilegeError(f"cannot signal {instance.name} (pid {pid}): that needs root "
                             "or the user who started it") from None
    except ProcessLookupError:
        pass  # it ended meanwhile: waiting finds it gone


def _wait_released(instance: Instance, timeout_s: float = 10.0) -> None:
    """Until the instance lock is free: a process's main thread shows as a zombie
    before its other threads have exited, and its descriptors (and locks) go with
    the last one. Then a restart cannot find the old run still holding the name."""
    from ncebpf.locks import instance_holder

    deadline = time.monotonic() + timeout_s
    while instance_holder(instance) is not None and time.monotonic() < deadline:
        time.sleep(0.02)


def _remove_remains(instance: Instance) -> str:
    """stop of an instance that is not running: clean up after it if it died."""
    from ncebpf.remains import remove

    return remove(instance).describe(instance.name)


def _read_outcome(instance: Instance) -> str:
    text = (read_small_file(instance.outcome_path) or "").strip()
    if not text:
        return ""
    instance.outcome_path.unlink(missing_ok=True)
    return text


def progress_of(pid: int) -> tuple[int, int] | None:
    """(bytes written, CPU ticks) of a process so far; None when it cannot be read.

    Either moving means the daemon is at work: its final drain of a large table
    uses CPU and writes nothing for seconds, then its dump writes for longer.
    """
    try:
        written = next(int(line.split()[1]) for line in
                       Path(f"/proc/{pid}/io").read_text().splitlines()
                       if line.startswith("wchar:"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return written, int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _wait_gone(pid: int, idle_timeout_s: float) -> bool:
    """Wait until pid has exited; give up after idle_timeout_s in which it made no progress."""
    progress = progress_of(pid)
    deadline = time.monotonic() + idle_timeout_s
    while time.monotonic() < deadline:
        if not is_ncebpf_process(pid):
            return True
        time.sleep(0.05)
        now_progress = progress_of(pid)
        if now_progress != progress:
            progress, deadline = now_progress, time.monotonic() + idle_timeout_s
    return not is_ncebpf_process(pid)


def _clean_up_after_kill(instance: Instance) -> str:
    """A killed daemon could not detach: remove its programs and its files."""
    from ncebpf.remains import remove

    return remove(instance).programs_text()
