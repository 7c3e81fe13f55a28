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

import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ncebpf.config import INSTANCE_NAME
from ncebpf.errors import NcebpfError, UsageError
from ncebpf.report.model import Snapshot
from ncebpf.report.sources import dump_from_bytes, read_dump

SCHEME = "ssh://"
MAX_PARALLEL = 64  # ssh clients at once; a fleet larger than that waits its turn
CONNECT_TIMEOUT_S = 10
# What may be a host or a user name on ssh's command line: nothing that starts with "-"
# (ssh would read an option) and nothing a shell or ssh_config's %-tokens give meaning to.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_COMMAND_NOT_FOUND = 127  # the remote shell's status for a command it cannot find


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
    """A source as given on the command line: an SshSource for `ssh://...`, else the path
    of a dump file. Raises UsageError for an ssh URL ncebpf cannot use, saying why."""
    if not text.startswith(SCHEME):
        return Path(text)
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as err:
        raise UsageError(f"{text}: not an ssh source ({err}): write "
                         "ssh://[user@]host[:port][/NAME]") from None
    host, user = url.hostname or "", url.username
    name = url.path[1:] or None
    if not _HOST.fullmatch(host):
        raise UsageError(f"{text}: no host name or address in it: write "
                         "ssh://[user@]host[:port][/NAME]")
    if user is not None and (not _USER.fullmatch(user) or url.password is not None):
        raise UsageError(f"{text}: {user!r} is not a user name (and a password never goes in "
                         "the URL: ssh uses keys, BatchMode)")
    if name is not None and not INSTANCE_NAME.fullmatch(name):
        raise UsageError(f"{text}: {name!r} is not an instance name (letters, digits, "
                         "._@- ; up to 64)")
    if url.query or url.fragment:
        raise UsageError(f"{text}: an ssh source has no ?query or #fragment")
    return SshSource(text=text, host=host, user=user, port=port, name=name)


def read_hosts_file(path: Path) -> list[str]:
    """The sources listed in path, one a line; blank lines and `#` comments are skipped.
    Raises NcebpfError naming path when it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise NcebpfError(f"--hosts {path}: cannot read it: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise NcebpfError(f"--hosts {path}: not a text file") from None
    return [line.strip() for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


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

    timeout_s bounds the whole fetch: an ssh client still running then is
    killed and its source fails. Raises UsageError when the ssh client is
    not installed.
    """
    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(sources)))) as pool:
        results = list(pool.map(lambda source: _fetch_one(source, options, deadline),
                                sources))
    parts = [result for result in results if isinstance(result, Snapshot)]
    failures = [result for result in results if isinstance(result, tuple)]
    return parts, failures


def _fetch_one(source: SshSource | Path, options: SshOptions, deadline: float
               ) -> Snapshot | tuple[str, str]:
    if isinstance(source, Path):
        try:
            return read_dump(source)
        except NcebpfError as err:
            return str(source), _without_source(str(err), str(source))
    left = deadline - time.monotonic()
    if left <= 0:
        return source.text, "not asked: --timeout ran out before its turn"
    argv = ssh_command(source, options, left)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=left, check=False)
    except FileNotFoundError:
        raise UsageError(f"{options.ssh}: no such command: install the OpenSSH client "
                         "(apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        return source.text, f"no dump within --timeout {left:g} s"
    if done.returncode != 0:
        return source.text, _ssh_error(done.returncode, done.stderr, options)
    try:
        return dump_from_bytes(done.stdout, source.text)
    except NcebpfError as err:
        return source.text, _without_source(str(err), source.text)


def _ssh_error(status: int, stderr: bytes, options: SshOptions) -> str:
    """One line from a failed ssh run: its last line on stderr (ssh's own error with status
    255, else the remote ncebpf's), with a hint where the status says more."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()
             if line.strip()]
    said = lines[-1].removeprefix("Error: ") if lines else "no message"  # click's prefix
    if status == _COMMAND_NOT_FOUND:
        return (f"{options.remote_ncebpf!r} not found on the host ({said}): give "
                "--remote-ncebpf the path of ncebpf there")
    if status == 255:
        return f"ssh: {said}" if not said.startswith("ssh:") else said
    return f"{said} (exit status {status})"


def _without_source(message: str, source: str) -> str:
    """An NcebpfError's text without the leading `source: ` the report already shows."""
    return message.removeprefix(f"{source}: ")
