"""Real database servers for the history tests: Debian's PostgreSQL and MariaDB, each in
a private data directory the test owns, listening only on a Unix socket in it (no TCP
port, nothing shared with the machine's own servers), stopped and removed after.

Both run as their packages' system users (PostgreSQL refuses root), so the directory is
handed to that user. stop() and start() take the server away and bring it back with its
data, as an outage would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.netns import TIME_SCALE, stop_process

START_TIMEOUT_S = 60


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for entry in path.rglob("*"):
        shutil.chown(entry, user, user)


def _as(user: str, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], check=True, capture_output=True,
                          text=True, timeout=timeout * TIME_SCALE)


def postgres_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else None


class DatabaseServer:
    url: str
    directory: Path
    proc: subprocess.Popen[str] | None  # None while stopped
    _log_fds: list[int]

    def __enter__(self) -> DatabaseServer:
        try:
            self.create()
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.close_logs()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _log(self) -> int:
        """The server's stderr: a file beside its data (a pipe nobody reads would fill)."""
        fd = os.open(self.directory / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o644)
        self._log_fds.append(fd)
        return fd

    def log_tail(self) -> str:
        try:
            return (self.directory / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def close_logs(self) -> None:
        for fd in self._log_fds:
            os.close(fd)
        self._log_fds.clear()

    def create(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class PostgresServer(DatabaseServer):
    """PostgreSQL on <directory>/socket, database `ncebpf`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._log_fds = []
        self.data, self.socket = directory / "data", directory / "socket"
        self.proc: subprocess.Popen[str] | None = None
        self.port = 5432
        self.url = f"postgresql://postgres@/ncebpf?host={self.socket}&port={self.port}"

    def create(self) -> None:
        initdb = postgres_bin("initdb")
        assert initdb, "PostgreSQL's server is not installed (make test installs it)"
        self.data.mkdir(parents=True)
        self.socket.mkdir()
        _chown_tree(self.directory, "postgres")
        _as("postgres", initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync")

    def start(self) -> None:
        postgres = postgres_bin("postgres")
        assert postgres
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", postgres, "-D", str(self.data),
             "-k", str(self.socket), "-c", "listen_addresses=", "-p", str(self.port),
             "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=self._log(), text=True)
        deadline = time.monotonic() + START_TIMEOUT_S * TIME_SCALE
        ready = postgres_bin("pg_isready")
        assert ready
        while subprocess.run([ready, "-q", "-h", str(self.socket), "-p", str(self.port)],
                             check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")
            time.sleep(0.2)
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-h",
                        str(self.socket), "-p", str(self.port), "-c", "CREATE DATABASE ncebpf"],
                       check=False, capture_output=True, timeout=60 * TIME_SCALE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # SIGTERM: PostgreSQL's smart shutdown; INT would be fast
        try:
            self.proc.wait(30 * TIME_SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class MariadbServer(DatabaseServer):
    """MariaDB on <directory>/mysqld.sock, database `ncebpf`, networking off."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._log_fds = []
        self.data, self.socket = directory / "data", directory / "mysqld.sock"
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"mysql://root@localhost/ncebpf?unix_socket={self.socket}"

    def create(self) -> None:
        install = shutil.which("mariadb-install-db")
        assert install, "MariaDB's server is not installed (make test installs it)"
        self.data.mkdir(parents=True)
        _chown_tree(self.directory, "mysql")
        subprocess.run([install, "--no-defaults", f"--datadir={self.data}", "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, text=True, timeout=120 * TIME_SCALE)

    def start(self) -> None:
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             "--skip-networking", "--user=mysql", f"--pid-file={self.directory / 'pid'}",
             "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=self._log(), text=True)
        deadline = time.monotonic() + START_TIMEOUT_S * TIME_SCALE
        while subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                              "-e", "CREATE DATABASE IF NOT EXISTS ncebpf"],
                             check=False, capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MariaDB did not start: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, timeout=60)
        self.proc = None


def servers_available() -> dict[str, str]:
    """Which servers this machine has, by backend; the reason for each missing one."""
    missing = {}
    if postgres_bin("initdb") is None:
        missing["postgresql"] = "PostgreSQL's server (Debian's postgresql) is not installed"
    if shutil.which("mariadb-install-db") is None:
        missing["mysql"] = "MariaDB's server (Debian's mariadb-server) is not installed"
    if os.geteuid() != 0:
        missing = {name: "the servers run as their system users: needs root"
                   for name in ("postgresql", "mysql")}
    return missing
