"""Test tiers: unit tests need nothing; `privileged` tests need root, BCC and netns.

Outside CI a privileged test that cannot run skips with the reason. Under
CI=true it fails instead: CI runs as root and must exercise the kernel path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.db_servers import (
    DatabaseServer,
    MariadbServer,
    PostgresServer,
    servers_available,
)
from tests.netns import CREATED, PREFIX, NetnsPair


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--first-case-only", action="store_true",
        help="run each parametrized test with its first case only (CI's VM leg: under "
             "emulation every case costs about a minute; the others are reported deselected)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--first-case-only"):
        return
    seen: set[str] = set()
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        function = item.nodeid.split("[", 1)[0]
        (deselected if function in seen else kept).append(item)
        seen.add(function)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def _privileged_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs BCC (apt-get install python3-bpfcc)"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@pytest.fixture(scope="session")
def privileged() -> None:
    reason = _privileged_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"privileged tests must run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pair(privileged: None) -> Iterator[NetnsPair]:
    with NetnsPair() as made:
        yield made


@pytest.fixture
def quiet_pair(privileged: None) -> Iterator[NetnsPair]:
    """A pair whose remote side has no IPv6 and so sends nothing on its own."""
    with NetnsPair(remote_ipv6=False) as made:
        yield made


@pytest.fixture
def silent_pair(privileged: None) -> Iterator[NetnsPair]:
    """No IPv6 on either side: neither stack sends anything on its own (no MLD)."""
    with NetnsPair(remote_ipv6=False, local_ipv6=False) as made:
        yield made


def _ncebpf_programs() -> dict[int, str]:
    """The loaded ncebpf programs, name by id ({} without bpftool)."""
    if not shutil.which("bpftool"):
        return {}
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return {int(p["id"]): p.get("name", "") for p in json.loads(out.stdout or "[]")
            if p.get("name", "").startswith("ncebpf_")}


def _test_namespaces() -> set[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout
    return {line.split()[0] for line in namespaces.splitlines() if line.startswith(PREFIX)}


def _attached_in(namespace: str) -> set[int]:
    """Ids of the BPF programs attached to the interfaces of a namespace."""
    out = subprocess.run(["ip", "netns", "exec", namespace, "bpftool", "-j", "net", "show"],
                         capture_output=True, text=True)
    ids: set[int] = set()
    for device in json.loads(out.stdout or "[]") if out.returncode == 0 else []:
        for hook in ("xdp", "tc"):
            ids |= {int(entry["id"]) for entry in device.get(hook, []) if "id" in entry}
    return ids


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    # A run killed before its clean-up (a session's end, a CI time limit) leaves its
    # namespaces and programs, and another run (or a developer's experiment) may count on
    # the same machine meanwhile: this run answers for its own only, the namespaces it
    # made (CREATED) and programs other than those loaded before it or attached in
    # namespaces not its own.
    programs = set(_ncebpf_programs())

    def programs_left() -> list[str]:
        others = set().union(*map(_attached_in, _test_namespaces() - CREATED))
        return [name for id_, name in _ncebpf_programs().items()
                if id_ not in programs and id_ not in others]

    yield
    if os.geteuid() != 0:
        return
    left = sorted(_test_namespaces() & CREATED)
    assert not left, f"test namespaces left behind: {left}"
    deadline = time.monotonic() + 15  # namespaces are torn down asynchronously
    while programs_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not programs_left(), f"ncebpf programs still loaded after the suite: " \
        f"{programs_left()}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _database_server(kind: type[DatabaseServer]) -> Iterator[DatabaseServer]:
    """A server of the kind for the whole session, in a directory its system user can
    reach (pytest's own are root's alone); skipped, or failed under CI, where it cannot run."""
    missing = servers_available()
    backend = "postgresql" if kind is PostgresServer else "mysql"
    if backend in missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the history tests against real servers must run under CI: "
                        f"{missing[backend]}")
        pytest.skip(missing[backend])
    directory = Path(tempfile.mkdtemp(prefix=f"ncebpf-{backend}-"))
    directory.chmod(0o755)
    try:
        with kind(directory / "server") as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseServer]:
    yield from _database_server(PostgresServer)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[DatabaseServer]:
    yield from _database_server(MariadbServer)
