"""A report over several hosts: their dumps fetched over ssh, or read from files (issue 15).

A source is a dump file or `ssh://[user@]host[:port][/NAME]`. For an ssh
source, OpenSSH's client runs `ncebpf dump --format json --output -` for
instance NAME (the host's default instance without one) on that host: a
fresh dump, drained when asked, never a stale copy (upstream's coalescer
fetched files with rsync, spec §11.8). Every source is fetched at once,
each in a thread of its own that waits on its ssh client; `--timeout`
bounds the whole fetch, and ssh runs with BatchMode (never a prompt) and a
connect timeout.

Unlike upstream, which sent stderr to /dev/null, a source that gives no
dump is kept with one line saying why: ssh's own error (unreachable host,
refused key), the remote ncebpf's (no such instance), or what was wrong
with the text it sent. merge.merge makes the report; it says it is partial.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

from ncebpf.config import DEFAULT_NAME, INSTANCE_NAME
from ncebpf.errors import NcebpfError, UsageError
from ncebpf.report.model import Snapshot
from ncebpf.report.sources import MAX_DUMP_BYTES, dump_from_bytes, read_dump

SCHEME = "ssh://"
MAX_PARALLEL = 64  # ssh clients at once; a fleet larger than that waits its turn
CONNECT_TIMEOUT_S = 10
SSH_PORT = 22
STDERR_KEPT = 64 << 10  # the end of a client's stderr: enough for its last lines
# What may be a host or a user name on ssh's command line: nothing that starts with "-"
# (ssh would read an option) and nothing a shell or ssh_config's %-tokens give meaning to.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")
_COMMENT = re.compile(r"(?:^|\s)#.*")  # a comment: a line's, or after a source and a space
_COMMAND_NOT_FOUND = 127  # the remote shell's status for a command it cannot find
_SSH_FAILED = 255  # ssh's own status: it could not connect or log in


@dataclass(frozen=True)
class SshSource:
    """`ssh://[user@]host[:port][/NAME]` parsed: text is the source as given, which
    reports name it by; user, port and name are None when not given (ssh's
    defaults, the host's default instance)."""

    text: str
    host: str
    user: str | None = None
    port: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class SshOptions:
    """How ssh sources are asked.

    config is an ssh_config(5) file given to ssh as -F (keys, known hosts,
    jump hosts); None: the user's ~/.ssh/config. remote_ncebpf is the
    command that starts ncebpf on the hosts, as their shell reads it
    (`/opt/ncebpf/bin/ncebpf`, `sudo -n ncebpf`).
    """

    config: Path | None = None
    remote_ncebpf: str = "ncebpf"
    ssh: str = "ssh"


def parse_source(text: str) -> SshSource | Path:
    """A source as given on the command line: an SshSource for `ssh://...` (the scheme in
    any case), else the path of a dump file. Raises UsageError for an ssh URL ncebpf
    cannot use, saying why."""
    if not text[:len(SCHEME)].lower() == SCHEME:
        if text[:4].lower() == "ssh:":
            raise UsageError(f"{text}: write ssh://[user@]host[:port][/NAME]")
        return Path(text)
    usage = "write ssh://[user@]host[:port][/NAME]"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as err:
        raise UsageError(f"{text}: not an ssh source ({err}): {usage}") from None
    host, user = url.hostname or "", url.username
    name = url.path[1:] or None
    if "%" in host:
        raise UsageError(f"{text}: a zone (%) is not supported: name the host in an "
                         "ssh_config (--ssh-config) and give that name")
    if not _HOST.fullmatch(host):
        raise UsageError(f"{text}: no host name or address in it: {usage}")
    if port == 0:
        raise UsageError(f"{text}: port 0 is no port: {usage}")
    if url.password is not None:
        raise UsageError(f"{text}: a password never goes in the URL: ssh logs in with keys "
                         "(BatchMode)")
    if user is not None:
        user = unquote(user)  # user%40example.org: a login name with an @
        if not _USER.fullmatch(user):
            raise UsageError(f"{text}: {user!r} is not a user name")
    if name is not None and not INSTANCE_NAME.fullmatch(name):
        raise UsageError(f"{text}: {name!r} is not an instance name (letters, digits, "
                         "._@- ; up to 64)")
    if url.query or url.fragment:
        raise UsageError(f"{text}: an ssh source has no ?query or #fragment")
    return SshSource(text=text, host=host, user=user, port=port, name=name)


def same_source(source: SshSource | Path) -> tuple[str, ...]:
    """What tells two sources apart: ssh sources by user, host (an address by value), port
    and instance, defaults filled in; files by their resolved path. Two sources with the
    same key are one source given twice."""
    if isinstance(source, Path):
        return ("file", str(source.resolve()))
    host = source.host.lower()
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return ("ssh", source.user or "", host, str(source.port or SSH_PORT),
            source.name or DEFAULT_NAME)


def read_hosts_file(path: Path) -> list[str]:
    """The sources listed in path, one a line; `#` starts a comment (at the start of a line,
    or after a space). A relative file path is taken from path's directory. Raises
    UsageError naming path, and the line, when it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"--hosts {path}: cannot read it: {err.strerror or err}") from None
    sources = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--hosts {path}: line {number} is not UTF-8 text") from None
        text = _COMMENT.sub("", text).strip()
        if not text:
            continue
        if text[:4].lower() != "ssh:" and not Path(text).is_absolute():
            text = str(path.parent / text)
        sources.append(text)
    return sources


def ssh_command(source: SshSource, options: SshOptions, timeout_s: float) -> list[str]:
    """The argv that asks source for its dump. The remote command is one string (ssh hands
    it to the user's shell): the dump's arguments are quoted, remote_ncebpf is not, so that
    it may be `sudo -n ncebpf`."""
    argv = [options.ssh, "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, min(CONNECT_TIMEOUT_S, int(timeout_s)))}",
            "-o", "LogLevel=ERROR"]  # no "Permanently added" lines in the error text
    if options.config is not None:
        argv += ["-F", str(options.config)]
    if source.port is not None:
        argv += ["-p", str(source.port)]
    if source.user is not None:
        argv += ["-l", source.user]
    dump = ["dump", "--format", "json", "--output", "-", "--timeout", f"{timeout_s:g}"]
    if source.name is not None:
        dump += ["--name", source.name]
    return [*argv, "--", source.host, f"{options.remote_ncebpf} {shlex.join(dump)}"]


def fetch(sources: Sequence[SshSource | Path], options: SshOptions, timeout_s: float
          ) -> tuple[list[Snapshot], list[tuple[str, str]]]:
    """Every source's dump, all at once: (the snapshots read, in the order given; the
    sources that gave none as (source text, one line saying why)).

    The ssh clients run side by side (MAX_PARALLEL at most), their output
    read by one loop; timeout_s bounds the whole fetch: a client still
    running then is killed and its source fails, as does one that sends
    more than MAX_DUMP_BYTES. However the fetch ends (an error, SIGTERM,
    Ctrl-C), no client is left running. Raises UsageError when the ssh
    client is not installed.
    """
    deadline = time.monotonic() + timeout_s
    remote = [source for source in sources if isinstance(source, SshSource)]
    with _terminated_by_sigterm():
        outputs = _run_all(remote, options, timeout_s, deadline)
    results: list[Snapshot | tuple[str, str]] = []
    for source in sources:
        if isinstance(source, Path):
            try:
                results.append(read_dump(source))
            except NcebpfError as err:
                results.append((str(source), _without_source(str(err), str(source))))
        else:
            results.append(_read_output(source, outputs[source.text], options))
    return ([result for result in results if isinstance(result, Snapshot)],
            [result for result in results if isinstance(result, tuple)])


@dataclass
class _Client:
    """One ssh client at work: its process and what it has sent so far."""

    source: SshSource
    process: subprocess.Popen[bytes]
    stdout: list[bytes] = field(default_factory=list)
    stdout_size: int = 0
    stderr: bytes = b""
    open_pipes: int = 2
    error: str = ""  # why it was stopped, when it was


@dataclass(frozen=True)
class _Output:
    """What an ssh client left: its exit status, stdout and the end of its stderr; or error,
    why it gave nothing (killed at the deadline, too much output, never started)."""

    status: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    error: str = ""


def _run_all(sources: Sequence[SshSource], options: SshOptions, timeout_s: float,
             deadline: float) -> dict[str, _Output]:
    waiting = list(reversed(sources))
    clients: list[_Client] = []
    by_pipe: dict[int, _Client] = {}
    done: dict[str, _Output] = {}
    selector = selectors.DefaultSelector()
    try:
        while waiting or clients:
            while waiting and len(clients) < MAX_PARALLEL:
                client = _start(waiting.pop(), options, timeout_s)
                clients.append(client)
                for pipe in (client.process.stdout, client.process.stderr):
                    assert pipe is not None
                    os.set_blocking(pipe.fileno(), False)
                    selector.register(pipe, selectors.EVENT_READ)
                    by_pipe[pipe.fileno()] = client
            left = deadline - time.monotonic()
            if left <= 0:
                for client in clients:
                    client.error = f"no dump within --timeout {timeout_s:g} s"
                for source in waiting:
                    done[source.text] = _Output(error="not asked: --timeout ran out before "
                                                      "its turn")
                break
            for key, _ in selector.select(left):
                reader = by_pipe.get(key.fd)
                if reader is not None and not _read(reader, key.fd):
                    selector.unregister(key.fileobj)
                    del by_pipe[key.fd]
            for client in [c for c in clients if c.error or c.open_pipes == 0]:
                clients.remove(client)
                done[client.source.text] = _finish(client, selector, by_pipe)
    finally:
        for client in clients:  # the deadline, an exception, a signal: none left behind
            done[client.source.text] = _finish(client, selector, by_pipe)
        selector.close()
    return done


def _start(source: SshSource, options: SshOptions, timeout_s: float) -> _Client:
    try:
        process = subprocess.Popen(ssh_command(source, options, timeout_s),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise UsageError(f"{options.ssh}: no such command: install the OpenSSH client "
                         "(apt-get install openssh-client)") from None
    return _Client(source, process)


def _read(client: _Client, fd: int) -> bool:
    """Read what the client sent on pipe fd; False at its end (the pipe is closed)."""
    try:
        chunk = os.read(fd, 1 << 20)
    except BlockingIOError:
        return True
    if not chunk:
        client.open_pipes -= 1
        return False
    assert client.process.stdout is not None
    if fd == client.process.stdout.fileno():
        client.stdout.append(chunk)
        client.stdout_size += len(chunk)
        if client.stdout_size > MAX_DUMP_BYTES:
            client.error = (f"sent more than {MAX_DUMP_BYTES >> 30} GiB, more than any "
                            "dump: is --remote-ncebpf ncebpf?")
    else:
        client.stderr = (client.stderr + chunk)[-STDERR_KEPT:]
    return True


def _finish(client: _Client, selector: selectors.BaseSelector, by_pipe: dict[int, _Client]
            ) -> _Output:
    """The client's end: killed unless it ended on its own, waited for, its pipes closed;
    what it left."""
    for fd in [fd for fd, owner in by_pipe.items() if owner is client]:
        selector.unregister(fd)
        del by_pipe[fd]
    if client.open_pipes:
        with contextlib.suppress(OSError):
            client.process.kill()
        client.error = client.error or "stopped before it finished"
    status = client.process.wait()
    for pipe in (client.process.stdout, client.process.stderr):
        if pipe is not None:
            pipe.close()
    return _Output(status, b"".join(client.stdout), client.stderr, client.error)


@contextlib.contextmanager
def _terminated_by_sigterm() -> Iterator[None]:
    """SIGTERM as an exception while the clients run, so that the loop's cleanup kills them
    (Python's default for SIGTERM ends the process on the spot, leaving them running)."""
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: its owner handles signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_output(source: SshSource, output: _Output, options: SshOptions
                 ) -> Snapshot | tuple[str, str]:
    if output.error:
        return source.text, output.error
    if output.status != 0:
        return source.text, _ssh_error(output.status, output.stderr, options)
    start = output.stdout.lstrip()[:60]
    if not start:
        return source.text, "sent nothing: ssh's command printed no dump"
    if not start.startswith(b"{"):
        shown = start.split(b"\n")[0].decode(errors="replace")
        return source.text, (f"not a JSON dump: it starts with {shown!r} (does the login "
                             "shell print text? a .bashrc echo, a banner)")
    try:
        return dump_from_bytes(output.stdout, source.text)
    except NcebpfError as err:
        return source.text, _without_source(str(err), source.text)


def _ssh_error(status: int, stderr: bytes, options: SshOptions) -> str:
    """One line from a failed ssh run: its last line on stderr (ssh's own error with status
    255, else the remote ncebpf's), with a hint where the status says more."""
    text = stderr.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = lines[-1].removeprefix("Error: ") if lines else "no message"  # click's prefix
    if status == _COMMAND_NOT_FOUND:
        return (f"{options.remote_ncebpf!r} not found on the host ({said}): give "
                "--remote-ncebpf the path of ncebpf there")
    if status == _SSH_FAILED:
        if "IDENTIFICATION HAS CHANGED" in text:
            return ("ssh: the host's key has CHANGED since known_hosts recorded it (a "
                    "reinstall, or someone in between): check it, then replace it "
                    "(ssh-keygen -R HOST)")
        if "Host key verification failed" in said:
            return ("ssh: Host key verification failed: the host's key is not in "
                    "known_hosts: log in once by hand, or add it (ssh-keyscan)")
        return said if said.startswith("ssh:") else f"ssh: {said}"
    return f"{said} (exit status {status})"


def _without_source(message: str, source: str) -> str:
    """An NcebpfError's text without the leading `source: ` the report already shows."""
    return message.removeprefix(f"{source}: ")
