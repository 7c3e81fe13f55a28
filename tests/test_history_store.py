"""History bins and their SQL store on SQLite: binning, replacement, roll-up, retention,
reads over a range, schema versions (issue 14 items 1-3). No root needed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncebpf.accounting import peer_key
from ncebpf.history import store
from ncebpf.history.bins import CLOSE_GRACE_S, Binner, ClosedBin, OpenBin, bin_start
from ncebpf.peerindex import key_array

HOST = store.Source("h1", "default")
DAY = store.DAY_S
T0 = 1_790_000_000 - 1_790_000_000 % DAY  # a UTC midnight in 2026


def keys_of(*addresses: str) -> np.ndarray:
    return key_array(b"".join(peer_key(a) for a in addresses))


def counts(*rows: tuple[int, int, int, int]) -> np.ndarray:
    return np.array(rows, dtype=np.uint64).reshape(-1, 4)


def closed(start: int, peers: dict[str, tuple[int, int, int, int]], seconds: int = 300,
           seen: int | None = None) -> ClosedBin:
    opened = OpenBin(start, seconds)
    opened.add(keys_of(*peers), counts(*peers.values()), start if seen is None else seen)
    return opened.closed()


def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of the backend the test is parametrized with: an
    SQLite file, or the session's PostgreSQL or MariaDB server with its tables dropped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.db'}"
    server = request.getfixturevalue(f"{request.param}_server")
    engine = store.connect(server.url)
    store.metadata.drop_all(engine)
    engine.dispose()
    return str(server.url)


BACKENDS = [pytest.param("sqlite"),
            pytest.param("postgres", marks=pytest.mark.privileged),
            pytest.param("mariadb", marks=pytest.mark.privileged)]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return empty_database(request, tmp_path)


@pytest.fixture
def engine(database_url: str):
    with store.opened(database_url) as opened:
        yield opened


def rows(engine: sa.Engine, seconds: int | None = None) -> list[tuple]:
    c = store.peer_bins.c
    query = sa.select(c.bin_seconds, c.bin_start, c.peer, c.in_packets, c.in_bytes,
                      c.out_packets, c.out_bytes).order_by(c.bin_seconds, c.bin_start, c.peer)
    if seconds is not None:
        query = query.where(c.bin_seconds == seconds)
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(query)]


# -- bins --------------------------------------------------------------------------------

def test_bins_are_aligned_to_the_clock_and_close_at_their_end() -> None:
    binner = Binner(300)
    assert binner.add(keys_of("10.77.0.2"), counts((1, 60, 2, 120)), T0 + 290) == []
    assert binner.next_end() == T0 + 300
    assert binner.tick(T0 + 299) == []
    # The drain at the end belongs to the bin it ends (CLOSE_GRACE_S), then tick closes it.
    assert binner.add(keys_of("10.77.0.2", "10.77.0.3"), counts((1, 60, 0, 0), (5, 500, 0, 0)),
                      T0 + 301) == []
    [done] = binner.tick(T0 + 301)
    assert (done.start, done.seconds) == (T0, 300)
    assert done.counts.tolist() == [[2, 120, 2, 120], [5, 500, 0, 0]]
    assert done.first_seen.tolist() == [T0 + 290, T0 + 299]  # within the bin
    assert done.last_seen.tolist() == [T0 + 299, T0 + 299]
    assert binner.open is None and binner.tick(T0 + 900) == []


def test_a_late_drain_closes_the_open_bin_first() -> None:
    binner = Binner(300)
    binner.add(keys_of("10.77.0.2"), counts((1, 60, 0, 0)), T0 + 10)
    [done] = binner.add(keys_of("10.77.0.2"), counts((7, 70, 0, 0)),
                        T0 + 300 + CLOSE_GRACE_S)
    assert done.counts.tolist() == [[1, 60, 0, 0]]
    assert binner.open is not None and binner.open.start == T0 + 300
    assert binner.flush()[0].counts.tolist() == [[7, 70, 0, 0]]


def test_an_open_bin_comes_back_from_its_rows() -> None:
    opened = OpenBin(T0, 300)
    opened.add(keys_of("fd77::1", "10.77.0.9"), counts((1, 2, 3, 4), (5, 6, 7, 8)), T0 + 3)
    again = OpenBin.resumed(ClosedBin.from_arrays(opened.closed().arrays()))
    again.add(keys_of("fd77::1"), counts((1, 1, 1, 1)), T0 + 9)
    result = again.closed()
    by_key = {key: (counts, first, last) for key, counts, first, last in zip(
        result.keys.tolist(), result.counts.tolist(), result.first_seen.tolist(),
        result.last_seen.tolist(), strict=True)}
    assert by_key == {peer_key("fd77::1"): ([2, 3, 4, 5], T0 + 3, T0 + 9),
                      peer_key("10.77.0.9"): ([5, 6, 7, 8], T0 + 3, T0 + 3)}


def test_bin_start() -> None:
    assert bin_start(T0 + 299, 300) == T0 and bin_start(T0 + 300, 300) == T0 + 300


# -- the store ---------------------------------------------------------------------------

def test_a_bin_written_twice_holds_its_last_version(engine: sa.Engine) -> None:
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (1, 2, 3, 4),
                                              "10.77.0.3": (9, 9, 9, 9)}), T0 + 300)
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (5, 6, 7, 8)}), T0 + 300)
    assert rows(engine) == [(300, T0, "10.77.0.2", 5, 6, 7, 8)]


def test_roll_up_sums_equal_the_bins_they_replace(engine: sa.Engine) -> None:
    rng = np.random.default_rng(7)
    peers = [str(ipaddress.IPv4Address(0x0A4D0000 + i)) for i in range(40)] + ["fd77::5"]
    for n in range(0, 2 * DAY // 300, 7):  # two days, every 35 minutes
        chosen = rng.choice(len(peers), size=int(rng.integers(1, 12)), replace=False)
        store.write_bin(engine, HOST, closed(T0 + 300 * n, {
            peers[i]: tuple(int(v) for v in rng.integers(0, 10**9, size=4)) for i in chosen}),
            T0 + 2 * DAY)
    fine = rows(engine, 300)
    summed, dropped = store.roll_up(engine, HOST, T0 + 2 * DAY)
    assert summed == 48 + 2 and dropped == 0
    for coarse, finer in ((3600, fine), (DAY, rows(engine, 3600))):
        expected: dict[tuple[int, str], list[int]] = {}
        for _, start, peer, *values in finer:
            sums = expected.setdefault((start - start % coarse, peer), [0, 0, 0, 0])
            sums[:] = [a + b for a, b in zip(sums, values, strict=True)]
        assert {(start, peer): list(values) for _, start, peer, *values
                in rows(engine, coarse)} == expected


def test_retention_drops_fine_bins_once_summed(engine: sa.Engine) -> None:
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (1, 1, 1, 1)}), T0 + 300)
    keep = store.Retention(fine_s=DAY, hours_s=10 * DAY)
    # A day and an hour later: the first hour's 5-minute bins go, its hour stays.
    assert store.roll_up(engine, HOST, T0 + DAY + 3600, keep) == (2, 1)
    assert rows(engine, 300) == []
    assert rows(engine, 3600) == [(3600, T0, "10.77.0.2", 1, 1, 1, 1)]
    assert rows(engine, DAY) == [(DAY, T0, "10.77.0.2", 1, 1, 1, 1)]
    # A bin of that hour arriving now (a database away for a day) adds to the hour, and
    # the day is summed again.
    store.write_bin(engine, HOST, closed(T0 + 600, {"10.77.0.2": (2, 2, 2, 2)}),
                    T0 + DAY + 3600, keep)
    assert rows(engine, 300) == []
    assert rows(engine, 3600) == [(3600, T0, "10.77.0.2", 3, 3, 3, 3)]
    store.roll_up(engine, HOST, T0 + DAY + 3600, keep)
    assert rows(engine, DAY) == [(DAY, T0, "10.77.0.2", 3, 3, 3, 3)]
    assert host_totals(engine) == host_totals_from_peers(engine)


def test_bins_waiting_to_be_summed_are_not_dropped(engine: sa.Engine) -> None:
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (1, 1, 1, 1)}), T0 + 300)
    keep = store.Retention(fine_s=0, hours_s=0)
    # The hour has not ended at T0 + 300: nothing summed, nothing dropped.
    assert store.roll_up(engine, HOST, T0 + 300, keep) == (0, 0)
    assert len(rows(engine, 300)) == 1


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.integers(0, 3 * DAY // 300 - 1),
                                 st.sampled_from(["10.77.0.1", "10.77.0.2", "fd77::3"]),
                                 st.integers(1, 1000)), min_size=1, max_size=30),
       roll_at=st.integers(0, 4 * DAY), since=st.integers(0, 3 * DAY // 300),
       length=st.integers(1, 3 * DAY // 300))
def test_a_range_reads_the_same_sums_whatever_was_rolled_up(
        tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, str, int]],
        roll_at: int, since: int, length: int) -> None:
    by_bin: dict[int, dict[str, tuple[int, int, int, int]]] = {}
    for n, peer, value in writes:
        by_bin.setdefault(n, {})[peer] = (value, 2 * value, 3 * value, 4 * value)
    path = tmp_path_factory.mktemp("range") / "h.db"
    with store.opened(f"sqlite:///{path}") as engine:
        for n, peers in by_bin.items():
            store.write_bin(engine, HOST, closed(T0 + 300 * n, peers), T0 + 3 * DAY)
        store.roll_up(engine, HOST, T0 + roll_at, store.Retention(fine_s=10 * DAY))
        lo, hi = T0 + 300 * since, T0 + 300 * (since + length)
        expected: dict[str, list[int]] = {}
        for n, peers in by_bin.items():
            if lo <= T0 + 300 * n < hi:
                for peer, values in peers.items():
                    sums = expected.setdefault(peer, [0, 0, 0, 0])
                    sums[:] = [a + b for a, b in zip(sums, values, strict=True)]
        got = {s.peer: [s.in_packets, s.in_bytes, s.out_packets, s.out_bytes]
               for s in store.peer_sums(engine, lo, hi)}
        assert got == expected
        assert host_totals(engine) == host_totals_from_peers(engine)


def host_totals(engine: sa.Engine) -> dict[tuple[int, int], tuple[int, ...]]:
    h = store.host_bins.c
    with engine.connect() as connection:
        return {(r[0], r[1]): tuple(r[2:]) for r in connection.execute(sa.select(
            h.bin_seconds, h.bin_start, h.peers, h.in_packets, h.in_bytes, h.out_packets,
            h.out_bytes))}


def host_totals_from_peers(engine: sa.Engine) -> dict[tuple[int, int], tuple[int, ...]]:
    totals: dict[tuple[int, int], list[int]] = {}
    for seconds, start, _, *values in rows(engine):
        into = totals.setdefault((seconds, start), [0, 0, 0, 0, 0])
        into[:] = [into[0] + 1, *(a + b for a, b in zip(into[1:], values, strict=True))]
    return {key: tuple(values) for key, values in totals.items()}


def test_a_week_is_read_from_daily_bins(engine: sa.Engine) -> None:
    for day in range(7):
        store.write_bin(engine, HOST, closed(T0 + day * DAY + 600, {"10.77.0.2": (1, 1, 1, 1)}),
                        T0 + 7 * DAY)
    store.roll_up(engine, HOST, T0 + 7 * DAY)
    segments = store._segments(T0, T0 + 7 * DAY, set())
    assert segments == [(DAY, T0, T0 + 7 * DAY)]
    [sums] = store.peer_sums(engine, T0, T0 + 7 * DAY)
    assert (sums.packets, sums.bytes) == (14, 14)


def test_two_hosts_share_a_database(engine: sa.Engine) -> None:
    other = store.Source("h2", "default")
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (1, 1, 1, 1)}), T0 + 300)
    store.write_bin(engine, other, closed(T0, {"10.77.0.2": (2, 2, 2, 2)}), T0 + 300)
    assert store.sources(engine) == [HOST, other]
    [both] = store.peer_sums(engine, T0, T0 + 300)
    [one] = store.peer_sums(engine, T0, T0 + 300, [other])
    assert (both.packets, one.packets) == (6, 4)


# -- schema ------------------------------------------------------------------------------

def test_the_schema_is_versioned_and_a_newer_one_refused(database_url: str) -> None:
    engine = store.connect(database_url)
    assert store.migrate(engine) == (0, store.SCHEMA_VERSION)
    assert store.migrate(engine) == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)
    with engine.begin() as connection:
        connection.execute(sa.update(store.meta).values(value="99"))
    with pytest.raises(store.HistoryError, match="schema version 99, newer"):
        store.migrate(engine)
    engine.dispose()


def test_a_version_2_database_loses_its_index_by_peer(database_url: str) -> None:
    engine = store.connect(database_url)
    with engine.begin() as connection:  # what ncebpf's second history schema made
        store.meta.create(connection)
        store.MIGRATIONS[1](connection)
        store.MIGRATIONS[2](connection)
        connection.execute(sa.text("CREATE INDEX peer_bins_by_peer ON peer_bins "
                                   "(peer, bin_start)"))
        connection.execute(sa.insert(store.meta).values(name="schema_version", value="2"))
    store.write_bin(engine, HOST, closed(T0, {"10.77.0.2": (1, 2, 3, 4)}), T0 + 300)
    with store.reading(database_url) as reader:  # a report reads it as it is
        [sums] = store.peer_sums(reader, T0, T0 + 300)
        assert sums.packets == 4
    with engine.connect() as connection:
        assert store.schema_version(connection) == 2
    assert store.migrate(engine) == (2, store.SCHEMA_VERSION)
    with engine.connect() as connection:
        indexes = sa.inspect(connection).get_indexes("peer_bins")
    assert [index["name"] for index in indexes] == []
    [sums] = store.peer_sums(engine, T0, T0 + 300)
    assert (sums.peer, sums.packets, sums.bytes) == ("10.77.0.2", 4, 6)
    engine.dispose()


def test_a_version_1_database_is_upgraded_in_place(database_url: str) -> None:
    engine = store.connect(database_url)
    with engine.begin() as connection:  # what ncebpf's first history schema made
        store.meta.create(connection)
        store.MIGRATIONS[1](connection)
        connection.execute(sa.insert(store.meta).values(name="schema_version", value="1"))
        connection.execute(sa.insert(store.peer_bins), [
            {"host": "h1", "instance": "t", "bin_seconds": 300, "bin_start": T0,
             "peer": peer, "in_packets": v[0], "in_bytes": v[1], "out_packets": v[2],
             "out_bytes": v[3], "first_seen": T0, "last_seen": T0, "names": None}
            for peer, v in {"10.77.1.1": (1, 100, 2, 300), "10.77.1.2": (3, 500, 0, 0),
                            "fd77:1::1": (5, 700, 5, 900)}.items()])
    with pytest.raises(store.HistoryError, match="start the instance that writes it once"):
        with store.reading(database_url):
            pass
    assert store.migrate(engine) == (1, store.SCHEMA_VERSION)
    with engine.connect() as connection:
        totals = connection.execute(sa.select(store.host_bins)).one()
    assert tuple(totals)[4:] == (3, 9, 1300, 7, 1200)
    [sums] = [s for s in store.peer_sums(engine, T0, T0 + 300) if s.peer == "10.77.1.2"]
    assert sums.bytes == 500
    engine.dispose()


@pytest.mark.parametrize(("given", "driver"), [
    ("sqlite:////var/lib/ncebpf/default.db", "sqlite"),
    ("postgresql://ncebpf@db.example/traffic", "postgresql+psycopg"),
    ("mysql://ncebpf:secret@db.example/traffic", "mysql+pymysql"),
    ("mariadb://ncebpf@db.example/traffic", "mysql+pymysql"),
    ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2"),
])
def test_database_urls_get_the_default_drivers(given: str, driver: str) -> None:
    assert store.database_url(given).drivername == driver


@pytest.mark.parametrize(("given", "message"), [
    ("/var/lib/x.db", "not a database URL"),
    ("oracle://u@h/d", "'oracle' databases are not supported"),
    ("sqlite://", "needs a file"),
])
def test_bad_database_urls_say_what_to_give(given: str, message: str) -> None:
    with pytest.raises(store.HistoryError, match=message):
        store.database_url(given)


def test_passwords_stay_out_of_messages() -> None:
    assert "secret" not in store.shown(store.database_url("mysql://u:secret@h/d"))


def test_a_retraction_takes_bins_out_and_their_hours_are_summed_anew(engine: sa.Engine) -> None:
    for n in range(12):
        store.write_bin(engine, HOST, closed(T0 + 300 * n, {"10.77.0.2": (1, 1, 1, 1)}),
                        T0 + 3600)
    store.roll_up(engine, HOST, T0 + 3600)
    assert rows(engine, 3600) == [(3600, T0, "10.77.0.2", 12, 12, 12, 12)]
    assert store.retract(engine, HOST, T0 + 300 * 8, T0 + 3600) == 4
    assert len(rows(engine, 300)) == 8
    store.roll_up(engine, HOST, T0 + DAY)
    assert rows(engine, 3600) == [(3600, T0, "10.77.0.2", 8, 8, 8, 8)]
    assert rows(engine, DAY) == [(DAY, T0, "10.77.0.2", 8, 8, 8, 8)]
    assert host_totals(engine) == host_totals_from_peers(engine)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_server_that_never_answers_fails_a_connection_in_seconds(
        tmp_path: Path, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and says nothing (hung, a firewall's half-open
    state) must not hold the writer for ever: it fails, and the sink logs it and retries.
    PyMySQL reads the greeting under its read timeout (STATEMENT_TIMEOUT_S): shortened."""
    import socket
    import time

    monkeypatch.setitem(store._TIMEOUTS["mysql"], "read_timeout", 3)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / (".s.PGSQL.5432" if scheme == "postgresql" else "mysqld.sock")
    listener.bind(str(path))
    listener.listen(4)
    url = f"postgresql://u@/db?host={tmp_path}" if scheme == "postgresql" else \
        f"mysql://u@localhost/db?unix_socket={path}"
    engine = store.connect(url)
    began = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect():
                pass
    finally:
        engine.dispose()
        listener.close()
    assert time.monotonic() - began < store.CONNECT_TIMEOUT_S + 5
