"""The history of a running daemon (issue 14 item 2): real traffic in a test namespace,
rows in the default SQLite database equal to the dump, per peer and direction, through a
stop and start and through a kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from ncebpf.history import store
from tests.db_servers import DatabaseServer
from tests.netns import NCEBPF, TIME_SCALE, NetnsPair
from tests.test_continuity import bpffs, ncebpf  # noqa: F401 - bpffs is a fixture

pytestmark = pytest.mark.privileged

BIN_S = 10
PEERS = {"10.77.0.2": 7, "10.77.0.3": 3}  # frames per round from each peer, in


def start(pair: NetnsPair, workdir: Path, bpffs: Path) -> None:  # noqa: F811
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc", "--history-bin", str(BIN_S),
           "--checkpoint", "1")


IN_FRAME = len(ip_frame("10.77.0.2", "10.77.0.1", "udp", 60))
OUT_FRAME = len(ip_frame("10.77.0.1", "10.77.0.2", "udp", 100))


def send_round(pair: NetnsPair, workdir: Path) -> None:
    inbound = [ip_frame(peer, pair.local_v4, "udp", 60) for peer, n in PEERS.items()
               for _ in range(n)]
    outbound = [ip_frame(pair.local_v4, "10.77.0.2", "udp", 100)]  # out to one peer
    pair.inject_ingress(inbound, workdir)
    pair.inject_egress(outbound, workdir)


def next_bin(seconds: int = BIN_S) -> None:
    """Wait into the next bin (and past the drain that closes the current one)."""
    time.sleep(seconds - time.time() % seconds + 1.5)


def room_in_bin(seconds: int, needed: float) -> None:
    """Be where the current bin of `seconds` has `needed` seconds left (times TIME_SCALE),
    waiting into the next one only when it has not."""
    if seconds - time.time() % seconds < needed * TIME_SCALE:
        next_bin(seconds)


def database_rows(workdir: Path) -> list[tuple[int, int, str, int, int, int, int]]:
    with sqlite3.connect(workdir / "state" / "t.db") as db:
        return db.execute(
            "SELECT bin_seconds, bin_start, peer, in_packets, in_bytes, out_packets, out_bytes"
            " FROM peer_bins WHERE bin_seconds = ? ORDER BY bin_start, peer",
            (BIN_S,)).fetchall()


def sums(rows: list[tuple[int, int, str, int, int, int, int]]) -> dict[str, list[int]]:
    total: dict[str, list[int]] = {}
    for _, _, peer, *values in rows:
        into = total.setdefault(peer, [0, 0, 0, 0])
        into[:] = [a + b for a, b in zip(into, values, strict=True)]
    return total


def wait_for(read: Callable[[], dict[str, list[int]]], expected: dict[str, list[int]],
             seconds: float = 90) -> dict[str, list[int]]:
    """What read() returns once it is expected, or at the deadline (the history's writer
    tries again every 60 s at most)."""
    deadline = time.monotonic() + seconds * TIME_SCALE
    while True:
        got = read()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def wait_for_rows(workdir: Path, expected: dict[str, list[int]]) -> dict[str, list[int]]:
    return wait_for(lambda: sums(database_rows(workdir))
                    if (workdir / "state" / "t.db").exists() else {}, expected, 20)


def dump_counts(path: Path) -> dict[str, list[int]]:
    peers = json.loads(path.read_text())["peers"]
    return {peer: [p["in_packets"], p["in_bytes"], p["out_packets"], p["out_bytes"]]
            for peer, p in peers.items()}


def expected_after(rounds: int) -> dict[str, list[int]]:
    out = {"10.77.0.2": [rounds, OUT_FRAME * rounds]}
    return {peer: [n * rounds, IN_FRAME * n * rounds, *out.get(peer, [0, 0])]
            for peer, n in PEERS.items()}


@pytest.fixture
def dirs(workdir: Path) -> Path:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    return workdir


def test_the_database_holds_the_dump_per_peer_per_bin(pair: NetnsPair, dirs: Path,
                                                      bpffs: Path) -> None:  # noqa: F811
    start(pair, dirs, bpffs)
    try:
        send_round(pair, dirs)
        next_bin()
        send_round(pair, dirs)
        next_bin()  # the second bin closes and is written while the daemon runs
        assert wait_for_rows(dirs, expected_after(2)) == expected_after(2)
        rows = database_rows(dirs)
        assert len({start for _, start, *_ in rows}) == 2
        assert all(start % BIN_S == 0 for _, start, *_ in rows)
        send_round(pair, dirs)
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
    # The stop sent the open bin too: the database has what the final dump has.
    final = dump_counts(dirs / "state" / "t.json")
    assert final == expected_after(3)
    assert wait_for_rows(dirs, final) == final
    assert (dirs / "state" / "t.history" / "open-bin.npz").exists()


def test_a_stop_and_start_within_a_bin_neither_loses_nor_doubles(pair: NetnsPair, dirs: Path,
                                                                bpffs: Path) -> None:  # noqa: F811
    room_in_bin(120, 50)  # what follows takes ~15 s: all of it in one 2-minute bin
    ncebpf(pair, dirs, bpffs, "start", "--mode", "tc", "--history-bin", "120")
    try:
        send_round(pair, dirs)
        ncebpf(pair, dirs, bpffs, "stop")
        ncebpf(pair, dirs, bpffs, "start", "--mode", "tc", "--history-bin", "120")
        send_round(pair, dirs)
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
    with sqlite3.connect(dirs / "state" / "t.db") as db:
        rows = db.execute("SELECT bin_start, peer, in_packets FROM peer_bins "
                          "WHERE bin_seconds = 120 ORDER BY peer").fetchall()
    assert len({start for start, _, _ in rows}) == 1, rows
    assert {peer: n for _, peer, n in rows} == {p: 2 * n for p, n in PEERS.items()}


def test_a_kill_9_after_bins_closed_since_the_checkpoint(pair: NetnsPair, dirs: Path,
                                                        bpffs: Path) -> None:  # noqa: F811
    """Bins of 10 s, checkpoints every 60 s: the kill comes after a bin was written from
    counts the next run reads again; and after a stop and start within a bin whose
    stopped state (open-bin.npz) is older than the bin the next run finished."""
    options = ("start", "--mode", "tc", "--history-bin", str(BIN_S), "--checkpoint", "60")
    ncebpf(pair, dirs, bpffs, *options)
    try:
        send_round(pair, dirs)
        next_bin()  # that bin is written; no checkpoint since the start's
        send_round(pair, dirs)
        os.kill(int((dirs / "run" / "t.pid").read_text()), signal.SIGKILL)
        ncebpf(pair, dirs, bpffs, *options)
        send_round(pair, dirs)
        ncebpf(pair, dirs, bpffs, "stop")
        ncebpf(pair, dirs, bpffs, *options)  # goes on with the stopped run's open bin
        send_round(pair, dirs)
        next_bin()  # ... which it finishes and writes
        os.kill(int((dirs / "run" / "t.pid").read_text()), signal.SIGKILL)
        ncebpf(pair, dirs, bpffs, *options)
        send_round(pair, dirs)
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
    assert dump_counts(dirs / "state" / "t.json") == expected_after(2)  # since the stop
    assert wait_for_rows(dirs, expected_after(5)) == expected_after(5)


def test_a_kill_9_neither_loses_nor_doubles_a_bin(pair: NetnsPair, dirs: Path,
                                                 bpffs: Path) -> None:  # noqa: F811
    start(pair, dirs, bpffs)
    try:
        send_round(pair, dirs)
        next_bin()
        send_round(pair, dirs)
        time.sleep(1.5)  # a checkpoint holds the second round's bin
        os.kill(int((dirs / "run" / "t.pid").read_text()), signal.SIGKILL)
        send_round(pair, dirs)  # counted by the kept programs while no daemon runs
        start(pair, dirs, bpffs)
        send_round(pair, dirs)
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
    assert dump_counts(dirs / "state" / "t.json") == expected_after(4)
    assert wait_for_rows(dirs, expected_after(4)) == expected_after(4)


def history_sums(url: str, instance: str = "t") -> dict[str, list[int]]:
    with store.opened(url) as engine:
        chosen = [s for s in store.sources(engine) if s.instance == instance]
        return {s.peer: [s.in_packets, s.in_bytes, s.out_packets, s.out_bytes]
                for s in store.peer_sums(engine, 0, 2**40, chosen)} if chosen else {}


def wait_for_sums(url: str, expected: dict[str, list[int]]) -> dict[str, list[int]]:
    return wait_for(lambda: history_sums(url), expected)


@pytest.fixture(params=["postgres"])  # MariaDB: the store's tests (a minute each saved)
def server(request: pytest.FixtureRequest) -> DatabaseServer:
    server: DatabaseServer = request.getfixturevalue(f"{request.param}_server")
    engine = store.connect(server.url)
    store.metadata.drop_all(engine)
    engine.dispose()
    return server


def test_a_database_away_for_a_minute_loses_and_doubles_nothing(
        pair: NetnsPair, dirs: Path, bpffs: Path, server: DatabaseServer) -> None:  # noqa: F811
    ncebpf(pair, dirs, bpffs, "start", "--mode", "tc", "--history-bin", str(BIN_S),
           "--history", server.url)
    try:
        send_round(pair, dirs)
        next_bin()
        assert wait_for_sums(server.url, expected_after(1)) == expected_after(1)
        server.stop()
        away_until = time.monotonic() + 60
        rounds = 1
        while time.monotonic() < away_until:  # bins close and wait in the spool
            send_round(pair, dirs)
            rounds += 1
            time.sleep(4)
        log = (dirs / "state" / "t.log").read_text()
        assert re.search(r"history: cannot write to .*; \d+ bins? waits? in ", log), log
        waiting = list((dirs / "state" / "t.history").glob("*.npz"))
        assert len([p for p in waiting if p.stem.isdigit()]) >= 4
        dumped = json.loads(ncebpf(pair, dirs, bpffs, "dump", "--format", "json",
                                   "--output", "-").stdout)
        assert dumped["totals"]["history_pending_bins"] >= 4
        assert dumped["totals"]["history_dropped_bins"] == 0
        server.start()
        next_bin()
        assert wait_for_sums(server.url, expected_after(rounds)) == expected_after(rounds)
        assert "takes the bins again" in (dirs / "state" / "t.log").read_text()
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
        if server.proc is None:
            server.start()
    assert wait_for_sums(server.url, expected_after(rounds)) == expected_after(rounds)


def test_two_hosts_share_one_database(pair: NetnsPair, dirs: Path, bpffs: Path,  # noqa: F811
                                      postgres_server: DatabaseServer) -> None:
    """Two daemons, each in its own UTS namespace (its own host name) and on its own link,
    write into one PostgreSQL database; each host's rows are its own counts."""
    url = postgres_server.url
    engine = store.connect(url)
    store.metadata.drop_all(engine)
    engine.dispose()
    with NetnsPair() as other:
        hosts = (("hosta", "a", pair), ("hostb", "b", other))
        for host, name, link in hosts:
            (dirs / name).mkdir()
            link.ns(link.local, "unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"',
                    "sh", *NCEBPF, "start", "--mode", "tc", "--history-bin", str(BIN_S),
                    "--history", url, "--no-resolve", "--iface", link.local_if, "--interval",
                    "0.2", "--statedir", str(dirs / name), "--piddir", str(dirs / name),
                    "--name", name, "--bpffs", str(bpffs))
        try:
            send_round(pair, dirs)
            send_round(other, dirs)
            send_round(other, dirs)
        finally:
            for _, name, link in hosts:
                link.ns(link.local, *NCEBPF, "stop", "--name", name, "--statedir",
                        str(dirs / name), "--piddir", str(dirs / name), "--bpffs", str(bpffs),
                        check=False)
    with store.opened(url) as engine:
        assert store.sources(engine) == [store.Source("hosta", "a"), store.Source("hostb", "b")]
        for source, rounds in zip(store.sources(engine), (1, 2), strict=True):
            got = {s.peer: [s.in_packets, s.in_bytes, s.out_packets, s.out_bytes]
                   for s in store.peer_sums(engine, 0, 2**40, [source])}
            assert got == expected_after(rounds), source
        both = {s.peer: s.in_packets for s in store.peer_sums(engine, 0, 2**40)}
    assert both == {peer: 3 * n for peer, n in PEERS.items()}


def test_a_kill_9_while_a_bin_is_written_loses_and_doubles_nothing(
        pair: NetnsPair, dirs: Path, bpffs: Path, postgres_server: DatabaseServer) -> None:  # noqa: F811
    """20 000 peers make a bin whose transaction takes a while; the daemon is killed as
    soon as the bin is spooled, while the writer sends it, and started again."""
    url = postgres_server.url
    engine = store.connect(url)
    store.metadata.drop_all(engine)
    engine.dispose()
    many = [f"10.77.{100 + i // 250}.{1 + i % 250}" for i in range(20_000)]
    options = ("start", "--mode", "tc", "--history-bin", str(BIN_S), "--history", url,
               "--checkpoint", "1")
    ncebpf(pair, dirs, bpffs, *options)
    spool = dirs / "state" / "t.history"
    try:
        pair.inject_ingress([ip_frame(peer, pair.local_v4, "udp", 60) for peer in many], dirs)
        deadline = time.monotonic() + (BIN_S + 10) * TIME_SCALE
        while not [p for p in spool.glob("*.npz") if p.stem.isdigit()]:
            assert time.monotonic() < deadline, "no bin was spooled"
            time.sleep(0.01)
        os.kill(int((dirs / "run" / "t.pid").read_text()), signal.SIGKILL)
        ncebpf(pair, dirs, bpffs, *options)
        send_round(pair, dirs)
    finally:
        ncebpf(pair, dirs, bpffs, "stop", check=False)
    final = dump_counts(dirs / "state" / "t.json")
    expected = {peer: [1, IN_FRAME, 0, 0] for peer in many} | expected_after(1)
    assert final == expected
    got = wait_for_sums(url, expected)
    assert len(got) == len(expected) and got == expected
