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

import logging
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from ncebpf.config import Instance, RunConfig
from ncebpf.errors import NcebpfError, PrivilegeError, UsageError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
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


def _become_daemon(log_path: Path) -> None:
    """Second half of the double fork: own session, no terminal, stdio to the log."""
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDONLY)
    logfile = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(logfile, 1)
    os.dup2(logfile, 2)
    os.close(null)
    os.close(logfile)


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
    try:
        _become_daemon(instance.log_path)
        Daemon(config, on_ready=lambda: _report(writer, f"ok {os.getpid()}")).run()
        code = 0
    except NcebpfError as exc:
        print(f"ncebpf: {exc}", file=sys.stderr)
        _report(writer, f"{'usage' if isinstance(exc, UsageError) else 'error'} {exc}")
        code = exc.exit_code
    except BaseException as exc:  # the parent must hear of it, whatever it was
        traceback.print_exc()
        _report(writer, f"error {type(exc).__name__}: {exc}")
    finally:
        sys.stderr.flush()
        os._exit(code)


def stop(instance: Instance, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Stop the instance; what happened, in words."""
    pid = running_pid(instance)
    if pid is None:
        return _remove_remains(instance)
    _signal(instance, pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        _wait_released(instance)
        return f"{instance.name} stopped (pid {pid})"
    log.warning("pid %d did not stop within %g s: SIGKILL", pid, timeout_s)
    _signal(instance, pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    _wait_released(instance)
    removed = _clean_up_after_kill(instance)
    return f"{instance.name} killed (pid {pid}){'; removed ' + removed if removed else ''}"


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


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_ncebpf_process(pid):
            return True
        time.sleep(0.05)
    return not is_ncebpf_process(pid)


def _clean_up_after_kill(instance: Instance) -> str:
    """A killed daemon could not detach: remove its programs and its files."""
    from ncebpf.remains import remove

    return remove(instance).programs_text()
