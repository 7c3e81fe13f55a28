"""The history in SQL: the schema and its migrations, bins written, rolled up and read.

Through SQLAlchemy Core, so that one code path serves SQLite (the default, a
file in the state directory), PostgreSQL and MariaDB/MySQL (a database that
several hosts share). Drivers: Python's sqlite3, psycopg 3 and PyMySQL;
`postgresql://` and `mysql://` (or `mariadb://`) URLs without a driver get
those.

One table holds every bin, `peer_bins`: a row per host, instance, bin
(bin_seconds wide, from bin_start, epoch seconds, a multiple of bin_seconds)
and peer (its address as text: 192.0.2.1, 2001:db8::1), with the in and out
packets and bytes the peer had in the bin (in = the peer sent it to a local
address, design §2) and the epoch seconds of the first and last drain that
saw it move there. 5-minute bins roll up into hourly and daily ones
(roll_up): the sums of a rolled-up row are those of the rows it replaces.

A bin is written whole, in one transaction that replaces whatever this
host's instance had for it: writing a bin twice (a spooled bin sent again
after a crash, or the same bin closed again from an older checkpoint) leaves
exactly the last version, never a sum of two.

The schema is versioned in `ncebpf_meta` (name 'schema_version'); migrate()
brings an older database up to SCHEMA_VERSION in place and refuses a newer
one. Nothing is ever dropped.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ncebpf.accounting import gc_paused, peer_text
from ncebpf.errors import NcebpfError, UsageError
from ncebpf.history.bins import ClosedBin

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
READABLE_FROM = 2  # the oldest schema the readers' queries work on (host_bins came in 2)
FIVE_MINUTES_S, HOUR_S, DAY_S = 300, 3600, 86400

metadata = sa.MetaData()

meta = sa.Table(
    "ncebpf_meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

COUNT_COLUMNS = ("in_packets", "in_bytes", "out_packets", "out_bytes")


def _bin_key() -> list[sa.Column[Any]]:
    """The key columns every table of bins starts with: whose bin, how wide, from when."""
    return [sa.Column("host", sa.String(255), primary_key=True),
            sa.Column("instance", sa.String(64), primary_key=True),
            sa.Column("bin_seconds", sa.Integer, primary_key=True),
            sa.Column("bin_start", sa.BigInteger, primary_key=True)]


def _counts() -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.BigInteger, nullable=False) for name in COUNT_COLUMNS]


peer_bins = sa.Table(
    "peer_bins", metadata,
    *_bin_key(),
    sa.Column("peer", sa.String(45), primary_key=True),
    *_counts(),
    sa.Column("first_seen", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=False),
    # The peer's reverse-DNS names when the bin closed, space-separated (a name that
    # begins with ':' is the SOA of an NXDOMAIN answer, spec §8.4); NULL: none.
    sa.Column("names", sa.String(1024), nullable=True),
    sqlite_with_rowid=False,  # the key is the table: stored once, not beside a rowid table
)

# Version 2: each bin's totals over its peers (charts over time read these, not the peers).
host_bins = sa.Table(
    "host_bins", metadata,
    *_bin_key(),
    sa.Column("peers", sa.Integer, nullable=False),
    *_counts(),
    sqlite_with_rowid=False,
)
# Version 2 had an index of peer_bins by (peer, bin_start), for one peer's bins without
# the range's other peers; version 3 drops it. Every bin touched every peer's leaf
# page of it, so writing a bin grew with the history kept (100 000 peers: 0.5 s into an
# empty SQLite file, 1.8 s two hours later) and it took a third of the file; the
# readers it served (a chart's busiest groups) scan the range's bins as fast.
_BY_PEER_V2 = "peer_bins_by_peer"

# Hourly and daily bins whose finer bins changed since they were last summed (roll_up).
rollup_pending = sa.Table("rollup_pending", metadata, *_bin_key())

# The default driver of each database the history speaks to.
_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres":
            "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


class HistoryError(NcebpfError):
    """The history database cannot be used as asked (a newer schema, unreadable)."""


class HistoryUrlError(HistoryError, UsageError):
    """A --history value that is no database URL ncebpf can use (exit status 2)."""


def database_url(text: str) -> sa.URL:
    """The SQLAlchemy URL of a --history value: sqlite:////ABSOLUTE/PATH, postgresql://…
    or mysql://… (mariadb://…), the scheme in any case; a driver given
    (postgresql+psycopg2://) is kept. Raises HistoryUrlError for anything else, and for a
    relative SQLite path: the daemon (run from /) and a report (run from anywhere) would
    read different files."""
    try:
        url = sa.make_url(text.strip())
        url = url.set(drivername=url.drivername.lower())
    except sa.exc.ArgumentError:
        raise HistoryUrlError(f"--history {text!r} is not a database URL: give "
                           "sqlite:///PATH, postgresql://USER@HOST/DB or "
                           "mysql://USER@HOST/DB") from None
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise HistoryUrlError(f"--history: {backend!r} databases are not supported: give "
                           "sqlite:///PATH, postgresql://… or mysql://…")
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if backend == "sqlite" and not url.database:
        raise HistoryUrlError("--history sqlite:///PATH needs a file (an in-memory database "
                              "would forget everything at exit)")
    if backend == "sqlite" and url.database and not url.database.startswith("/"):
        raise HistoryUrlError(f"--history {text!r} names {url.database!r}, a path relative "
                              "to the working directory: give an absolute one after the "
                              "three slashes, sqlite:////var/lib/ncebpf/NAME.db")
    return url


def shown(url: sa.URL) -> str:
    """The URL for logs and messages as the operator gives it: the password hidden, no
    default driver, no read-only file: URI (_read_only)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite:///{str(url.database).removeprefix('file:')}"
    if _DRIVERS.get(backend) == url.drivername:
        url = url.set(drivername=backend)
    return url.render_as_string(hide_password=True)


# A server that takes the connection and never answers must not hold the writer for ever:
# it fails, says so in the log, and is tried again (the bins wait in the spool).
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 300  # a bin of a million peers takes well under a minute
_TIMEOUTS: dict[str, dict[str, Any]] = {
    "postgresql": {"connect_timeout": CONNECT_TIMEOUT_S,
                   "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"},
    "mysql": {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": STATEMENT_TIMEOUT_S,
              "write_timeout": STATEMENT_TIMEOUT_S},
}


def _read_only(url: sa.URL) -> sa.URL:
    """An SQLite URL opened read-only. A file in WAL mode that no one has open has no -wal
    and -shm files, and a reader who may not write the directory cannot make them: it
    reads the file as it is, immutable (sqlite3 URI filenames), which is what it is."""
    path = str(url.database)
    query = {"mode": "ro", "uri": "true"}
    if not os.access(os.path.dirname(path), os.W_OK) and not os.path.exists(f"{path}-wal"):
        query["immutable"] = "1"
    return url.set(database=f"file:{path}", query=query)


def connect(text: str, writing: bool = True) -> Engine:
    """An engine for a --history URL (nothing is connected yet), with CONNECT_TIMEOUT_S and
    STATEMENT_TIMEOUT_S. SQLite waits for locks instead of failing, and the writer puts it in
    WAL mode (kept in the file) so that reports read while it writes; a reader changes
    nothing, so that anyone who may read the file can (sqlite3(1): journal_mode)."""
    url = database_url(text)
    backend = url.get_backend_name()
    if backend == "sqlite" and not writing:
        url = _read_only(url)
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=_TIMEOUTS.get(backend, {}))
    if backend == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if writing:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a crash
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: a bin's index pages stay
            cursor.close()
    return engine


def _create_v1(connection: Connection) -> None:
    """peer_bins and rollup_pending (not the indexes of later versions, which their
    migrations make). Every query names its host and instance: the key's order serves."""
    for table in (peer_bins, rollup_pending):
        if not sa.inspect(connection).has_table(table.name):
            connection.execute(sa.schema.CreateTable(table))


def _host_bins_v2(connection: Connection) -> None:
    """host_bins, filled from the peer rows already there (and in version 2, an index
    that version 3 drops)."""
    host_bins.create(connection, checkfirst=True)
    c = peer_bins.c
    connection.execute(sa.insert(host_bins).from_select(
        [column.name for column in host_bins.columns],
        sa.select(c.host, c.instance, c.bin_seconds, c.bin_start, sa.func.count(),
                  *(sa.func.sum(getattr(c, name)) for name in COUNT_COLUMNS))
        .group_by(c.host, c.instance, c.bin_seconds, c.bin_start)))


def _without_by_peer_v3(connection: Connection) -> None:
    """peer_bins without version 2's index by peer (see _BY_PEER_V2)."""
    if any(index["name"] == _BY_PEER_V2
           for index in sa.inspect(connection).get_indexes(peer_bins.name)):
        # On a table of its own metadata: an index on peer_bins would join its schema.
        table = sa.Table(peer_bins.name, sa.MetaData(), sa.Column("peer", sa.String(45)))
        sa.Index(_BY_PEER_V2, table.c.peer).drop(connection)


# Version n's migration takes a database at version n - 1 to n, in one transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _create_v1, 2: _host_bins_v2, 3: _without_by_peer_v3}


def schema_version(connection: Connection) -> int:
    """The database's history schema version; 0 for a database without one."""
    if not sa.inspect(connection).has_table(meta.name):
        return 0
    value = connection.execute(
        sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    return int(value) if value is not None else 0


def _refuse_newer(engine: Engine, found: int) -> None:
    if found > SCHEMA_VERSION:
        raise HistoryError(f"the history database {shown(engine.url)} has schema version "
                           f"{found}, newer than this ncebpf's {SCHEMA_VERSION}: upgrade "
                           "ncebpf, or give another --history")


def migrate(engine: Engine) -> tuple[int, int]:
    """Bring the database's schema to SCHEMA_VERSION, each step in a transaction; return
    (version found, version now). Raises HistoryError for a newer schema."""
    with engine.begin() as connection:
        meta.create(connection, checkfirst=True)
    with engine.begin() as connection:
        found = schema_version(connection)
    _refuse_newer(engine, found)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        with engine.begin() as connection:
            if schema_version(connection) >= version:  # another host got there first
                continue
            MIGRATIONS[version](connection)
            connection.execute(sa.delete(meta).where(meta.c.name == "schema_version"))
            connection.execute(sa.insert(meta).values(name="schema_version",
                                                      value=str(version)))
    if found < SCHEMA_VERSION:
        log.info("history database %s: %s schema version %d", shown(engine.url),
                 f"upgraded from {found} to" if found else "created with", SCHEMA_VERSION)
    return found, SCHEMA_VERSION


@dataclass(frozen=True)
class Source:
    """Whose rows: the host and instance name a daemon writes under."""

    host: str
    instance: str


BinRow = tuple[Any, ...]  # peer_bins' columns after the bin's key: peer, ..., names
_BIN_KEY_COLUMNS = 4  # host, instance, bin_seconds, bin_start


def bin_rows(closed: ClosedBin) -> list[BinRow]:
    """The peers' rows of a closed bin, as tuples of peer_bins' columns after the bin's
    key (peer, counts, first_seen, last_seen, names), in the order of the table's key (by
    peer text: the insert then appends to the bin's pages instead of splitting pages all
    over it). Pure."""
    with gc_paused():
        addresses = [peer_text(key) for key in closed.keys.tolist()]
        names: list[str | None] = [None] * len(addresses)
        for at, given in closed.names.items():
            names[at] = " ".join(given)[:1024] or None
        counts = [closed.counts[:, column].tolist() for column in range(len(COUNT_COLUMNS))]
        rows = list(zip(addresses, *counts, closed.first_seen.tolist(),
                        closed.last_seen.tolist(), names, strict=True))
        rows.sort(key=_peer_of)
    return rows


_peer_of = operator.itemgetter(0)  # a BinRow's peer column


def _insert(connection: Connection, source: Source, seconds: int, start: int,
            rows: Sequence[BinRow]) -> None:
    """INSERT the rows of source's bin (seconds, start) into peer_bins with the driver's
    own executemany: SQLAlchemy's parameter processing would cost more than the database
    (1.5 s of 2 s for 100 000 rows into SQLite). The bin's key goes into the statement
    as literals, bound once rather than on every row (about a tenth of SQLite's time).
    PostgreSQL through psycopg takes them with COPY, its bulk load."""
    if not rows:
        return
    columns = ", ".join(column.name for column in peer_bins.columns)
    bin_key = (source.host, source.instance, int(seconds), int(start))
    if connection.dialect.driver == "psycopg":
        with connection.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(f"COPY {peer_bins.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(bin_key + row)
        return
    qmark = connection.dialect.paramstyle == "qmark"
    key = ", ".join(str(sa.literal(value).compile(dialect=connection.dialect,
                                                  compile_kwargs={"literal_binds": True}))
                    for value in bin_key)
    if not qmark:  # psycopg2 and PyMySQL read % in the statement as their markers' start
        key = key.replace("%", "%%")
    marker = "?" if qmark else "%s"
    markers = ", ".join([marker] * (len(peer_bins.columns) - _BIN_KEY_COLUMNS))
    connection.exec_driver_sql(
        f"INSERT INTO {peer_bins.name} ({columns}) VALUES ({key}, {markers})", list(rows))


def _of(source: Source) -> sa.ColumnElement[bool]:
    return sa.and_(peer_bins.c.host == source.host, peer_bins.c.instance == source.instance)


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept (seconds), as vnstat keeps its tiers: the finest
    bins (5 minutes by default) a week, hourly ones 90 days, daily ones forever."""

    fine_s: int = 7 * DAY_S
    hours_s: int = 90 * DAY_S

    def kept_from(self, seconds: int, now: int) -> int | None:
        """The first epoch second whose bins of this width are still kept at now (whole
        bins of the next width only), or None when they are kept forever."""
        coarse = coarser(seconds)
        if coarse is None:
            return None
        cutoff = now - (self.fine_s if seconds < HOUR_S else self.hours_s)
        return cutoff - cutoff % coarse


def coarser(seconds: int) -> int | None:
    """The width a bin of `seconds` rolls up into: bins shorter than an hour into hours
    (a bin width divides the hour: ncebpf.config checks), hours into days."""
    return HOUR_S if seconds < HOUR_S else DAY_S if seconds == HOUR_S else None


def _mark(connection: Connection, source: Source, seconds: int, start: int) -> None:
    """Note that the bin (seconds, start) must be summed again from the finer bins."""
    if not _is_pending(connection, source, seconds, start):
        connection.execute(sa.insert(rollup_pending).values(
            host=source.host, instance=source.instance, bin_seconds=seconds, bin_start=start))


def _sums_of(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    c = peer_bins.c
    return sa.select(c.peer, *(sa.func.sum(getattr(c, name)).label(name)
                               for name in COUNT_COLUMNS),
                     sa.func.min(c.first_seen).label("first_seen"),
                     sa.func.max(c.last_seen).label("last_seen"),
                     sa.func.max(c.names).label("names")).where(where).group_by(c.peer)


def _replace_with_sums(connection: Connection, source: Source, seconds: int, start: int,
                       where: sa.ColumnElement[bool]) -> None:
    """Make the bin (seconds, start) of source the per-peer sums of the rows `where`
    selects (which may include the bin's own rows: they are read before they go)."""
    c = peer_bins.c
    sums = connection.execute(_sums_of(where)).all()
    connection.execute(sa.delete(peer_bins).where(_of(source), c.bin_seconds == seconds,
                                                  c.bin_start == start))
    _insert(connection, source, seconds, start,
            [(str(row[0]), *(int(v) for v in row[1:7]), row[7]) for row in sums])
    _refresh_totals(connection, source, seconds, start)


def _refresh_totals(connection: Connection, source: Source, seconds: int, start: int) -> None:
    """host_bins' row of the bin (seconds, start): the sums of its peer rows; none when it
    has none."""
    h, c = host_bins.c, peer_bins.c
    connection.execute(sa.delete(host_bins).where(
        h.host == source.host, h.instance == source.instance, h.bin_seconds == seconds,
        h.bin_start == start))
    connection.execute(sa.insert(host_bins).from_select(
        [column.name for column in host_bins.columns],
        sa.select(sa.literal(source.host), sa.literal(source.instance), sa.literal(seconds),
                  sa.literal(start), sa.func.count(),
                  *(sa.func.sum(getattr(c, name)) for name in COUNT_COLUMNS))
        .where(_within(source, seconds, start, start + 1)).having(sa.func.count() > 0)))


def _within(source: Source, seconds: int, start: int, end: int) -> sa.ColumnElement[bool]:
    c = peer_bins.c
    return sa.and_(_of(source), c.bin_seconds == seconds, c.bin_start >= start,
                   c.bin_start < end)


def _is_pending(connection: Connection, source: Source, seconds: int, start: int) -> bool:
    c = rollup_pending.c
    return connection.execute(sa.select(sa.literal(1)).where(
        c.host == source.host, c.instance == source.instance, c.bin_seconds == seconds,
        c.bin_start == start)).first() is not None


def _chain(seconds: int) -> list[tuple[int, int]]:
    """(fine, coarse) from a bin of `seconds` up to days: [(300, 3600), (3600, 86400)]."""
    chain = []
    coarse = coarser(seconds)
    while coarse is not None:
        chain.append((seconds, coarse))
        seconds, coarse = coarse, coarser(coarse)
    return chain


def write_bin(engine: Engine, source: Source, closed: ClosedBin, now: int,
              retention: Retention = Retention()) -> None:
    """Write one closed bin, replacing what source had for it, in one transaction, and
    note its hour and day for roll_up.

    A bin older than its width is kept (a database that was away for longer)
    whose hour was summed and its finer bins dropped is added to that hour
    (or day) instead; that addition, unlike the replacement, would count
    twice if repeated.
    """
    rows = bin_rows(closed)
    seconds, start = closed.seconds, closed.start
    with engine.begin() as connection:
        target = seconds
        for fine, coarse in _chain(seconds):
            kept_from = retention.kept_from(fine, now)
            bucket = start - start % coarse
            if target == fine and kept_from is not None and bucket < kept_from and \
                    not _is_pending(connection, source, coarse, bucket):
                target = coarse
        connection.execute(sa.delete(peer_bins).where(_within(source, seconds, start,
                                                              start + 1)))
        _insert(connection, source, seconds, start, rows)
        _refresh_totals(connection, source, seconds, start)
        if target != seconds:
            log.warning("history: the bin of %s is older than %s bins are kept: added to "
                        "its %s bin", when(start), _width(seconds), _width(target))
            bucket = start - start % target
            _replace_with_sums(connection, source, target, bucket, sa.or_(
                _within(source, target, bucket, bucket + 1),
                _within(source, seconds, start, start + 1)))
            connection.execute(sa.delete(peer_bins).where(_within(source, seconds, start,
                                                                  start + 1)))
            _refresh_totals(connection, source, seconds, start)
        for _fine, coarse in _chain(target):
            _mark(connection, source, coarse, start - start % coarse)


def retract(engine: Engine, source: Source, since: int, now: int,
            retention: Retention = Retention()) -> int:
    """Take source's finest bins from `since` on out (their counts are being read again:
    ncebpf.history.sink), in one transaction, and note their hours and days to be summed
    anew; never bins older than the finest are kept, whose hours could not be summed
    again. Return how many peer rows went."""
    kept_from = retention.kept_from(FIVE_MINUTES_S, now) or 0
    since = max(since, kept_from)
    with engine.begin() as connection:
        h = host_bins.c
        starts = [int(s) for s in connection.execute(sa.select(h.bin_start).where(
            h.host == source.host, h.instance == source.instance, h.bin_seconds < HOUR_S,
            h.bin_start >= since)).scalars()]
        for start in starts:
            for _fine, coarse in _chain(FIVE_MINUTES_S):
                _mark(connection, source, coarse, start - start % coarse)
        gone = 0
        for table in (peer_bins, host_bins):
            t = table.c
            result = connection.execute(sa.delete(table).where(
                t.host == source.host, t.instance == source.instance, t.bin_seconds < HOUR_S,
                t.bin_start >= since))
            gone += int(result.rowcount) if table is peer_bins else 0
    return gone


def roll_up(engine: Engine, source: Source, now: int, retention: Retention = Retention()
            ) -> tuple[int, int]:
    """Sum source's finer bins into the hourly and daily bins write_bin noted, once those
    have ended (each in a transaction: its sums are those of the rows it sums; a day
    after its hours), then drop the bins older than retention keeps, of coarse bins
    summed only. Return (bins summed, rows dropped)."""
    summed = dropped = 0
    p = rollup_pending.c
    mine = sa.and_(p.host == source.host, p.instance == source.instance)
    with engine.connect() as connection:
        due = connection.execute(
            sa.select(p.bin_seconds, p.bin_start)
            .where(mine, p.bin_start + p.bin_seconds <= now)
            .order_by(p.bin_seconds, p.bin_start)).all()
    for coarse, start in ((int(w), int(s)) for w, s in due):
        with engine.begin() as connection:
            if coarse == DAY_S and connection.execute(sa.select(p.bin_start).where(
                    mine, p.bin_seconds == HOUR_S, p.bin_start >= start,
                    p.bin_start < start + DAY_S)).first() is not None:
                continue  # an hour of the day is not summed yet (it has not ended)
            finer = peer_bins.c.bin_seconds < HOUR_S if coarse == HOUR_S else \
                peer_bins.c.bin_seconds == HOUR_S
            _replace_with_sums(connection, source, coarse, start, sa.and_(
                _of(source), finer, peer_bins.c.bin_start >= start,
                peer_bins.c.bin_start < start + coarse))
            connection.execute(sa.delete(rollup_pending).where(
                mine, p.bin_seconds == coarse, p.bin_start == start))
            summed += 1
    for fine, coarse in ((FIVE_MINUTES_S, HOUR_S), (HOUR_S, DAY_S)):
        kept_from = retention.kept_from(fine, now)
        assert kept_from is not None
        with engine.begin() as connection:
            waiting = sa.select(p.bin_start).where(mine, p.bin_seconds == coarse)
            for table in (peer_bins, host_bins):
                t = table.c
                gone = connection.execute(sa.delete(table).where(
                    t.host == source.host, t.instance == source.instance,
                    t.bin_seconds < HOUR_S if fine < HOUR_S else t.bin_seconds == HOUR_S,
                    t.bin_start < kept_from,
                    (t.bin_start - t.bin_start % coarse).not_in(waiting))).rowcount
                dropped += int(gone) if table is peer_bins else 0
    return summed, dropped


def refresh_statistics(engine: Engine) -> None:
    """Let SQLite's query planner know the tables' shapes (ANALYZE, sampled: milliseconds),
    so that a peer's bins are found by its index, not by reading every peer's; PostgreSQL
    and MariaDB keep their statistics themselves."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA analysis_limit=1000")
            connection.exec_driver_sql("ANALYZE")


def when(epoch_s: int) -> str:
    """A bin's start for the log: 2026-11-30 14:05 UTC (14:05:10 UTC within a minute)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC" if epoch_s % 60 else "%Y-%m-%d %H:%M UTC",
                         time.gmtime(epoch_s))


def _width(seconds: int) -> str:
    return {FIVE_MINUTES_S: "5-minute", HOUR_S: "hourly", DAY_S: "daily"}.get(
        seconds, f"{seconds}-second")


@dataclass(frozen=True)
class PeerSums:
    """A peer's counts over a time range, summed over the bins within it (and over hosts,
    when several are read)."""

    peer: str
    in_packets: int
    in_bytes: int
    out_packets: int
    out_bytes: int
    first_seen: int
    last_seen: int
    names: tuple[str, ...] = ()

    @property
    def packets(self) -> int:
        return self.in_packets + self.out_packets

    @property
    def bytes(self) -> int:
        return self.in_bytes + self.out_bytes


def _segments(since: int, until: int, pending: set[tuple[int, int]], widest: int = DAY_S
              ) -> list[tuple[int, int, int]]:
    """Cover [since, until) with (width, start, end) segments, each to be read from the
    bins of that width (0: the finest): whole days whose daily bin is summed, then
    whole hours whose hourly bin is, then the finest bins; no bin wider than widest.
    Pure."""
    segments: list[tuple[int, int, int]] = []
    gaps = [(since, until)]
    for width in (w for w in (DAY_S, HOUR_S) if w <= widest):
        left = []
        for lo, hi in gaps:
            first = -(-lo // width) * width
            at = lo
            for start in range(first, hi - width + 1, width):
                if (width, start) in pending:
                    continue
                if start > at:
                    left.append((at, start))
                if segments and segments[-1][0] == width and segments[-1][2] == start:
                    segments[-1] = (width, segments[-1][1], start + width)
                else:
                    segments.append((width, start, start + width))
                at = start + width
            if at < hi:
                left.append((at, hi))
        gaps = left
    return segments + [(0, lo, hi) for lo, hi in gaps]


def _read_where(source: Source, segments: list[tuple[int, int, int]],
                table: sa.Table = peer_bins) -> sa.ColumnElement[bool]:
    c = table.c
    return sa.and_(c.host == source.host, c.instance == source.instance, sa.or_(*(
        sa.and_(c.bin_seconds < HOUR_S if width == 0 else c.bin_seconds == width,
                c.bin_start >= lo, c.bin_start < hi)
        for width, lo, hi in segments)))


def _pending(connection: Connection, source: Source, since: int, until: int
             ) -> set[tuple[int, int]]:
    """The (width, start) of source's hourly and daily bins over [since, until) that wait
    to be summed again (roll_up)."""
    p = rollup_pending.c
    return {(int(w), int(s)) for w, s in connection.execute(
        sa.select(p.bin_seconds, p.bin_start).where(
            p.host == source.host, p.instance == source.instance,
            p.bin_start < until, p.bin_start + p.bin_seconds > since))}


def peer_sums(engine: Engine, since: int, until: int,
              chosen: Sequence[Source] = ()) -> list[PeerSums]:
    """Each peer's sums over the bins that start in [since, until) (epoch seconds), of
    the chosen sources (all when none), in address-text order. Whole days and hours
    are read from their daily and hourly bins where those are summed (roll_up): a
    week is 7 rows a peer, not 2016."""
    merged: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    with engine.connect() as connection:
        for source in chosen or sources(engine):
            segments = _segments(since, until, _pending(connection, source, since, until))
            for row in connection.execute(_sums_of(_read_where(source, segments))):
                if row[7]:
                    names[row[0]] = max(row[7], names.get(row[0], ""))
                values = [int(v) for v in row[1:7]]
                had = merged.get(row[0])
                if had is None:
                    merged[row[0]] = values
                else:
                    merged[row[0]] = [a + b for a, b in zip(had[:4], values[:4], strict=True)
                                      ] + [min(had[4], values[4]), max(had[5], values[5])]
    return [PeerSums(peer, v[0], v[1], v[2], v[3], v[4], v[5],
                     tuple(names.get(peer, "").split()))
            for peer, v in sorted(merged.items())]


def _finest_segments(connection: Connection, source: Source, since: int, until: int
                     ) -> list[tuple[int, int, int]]:
    """Cover [since, until) with (width, start, end) segments at the finest resolution
    the database still has: an hour from its finer bins where it has some, else from
    its hourly bin; a day from its hourly bins where it has some, else from its daily
    bin. Finer bins go only whole coarse bins at a time (roll_up), so a coarse bin that
    has finer ones is whole in them."""
    c = host_bins.c  # a row per bin: the same bins as peer_bins, far fewer rows
    begins = c.bin_start

    def having(finer: sa.ColumnElement[bool], coarse: int) -> set[int]:
        return {int(b) for b in connection.execute(
            sa.select(begins - begins % coarse).distinct().where(
                c.host == source.host, c.instance == source.instance, finer,
                begins >= since - since % coarse, begins < until))
            .scalars()}

    hours_with_fine = having(c.bin_seconds < HOUR_S, HOUR_S)
    days_with_finer = having(c.bin_seconds < DAY_S, DAY_S)
    segments: list[tuple[int, int, int]] = []

    def add(width: int, lo: int, hi: int) -> None:
        if segments and segments[-1][0] == width and segments[-1][2] == lo:
            segments[-1] = (width, segments[-1][1], hi)  # one range, not many: a short query
        else:
            segments.append((width, lo, hi))

    for lo, hi, width in _split(since, until, DAY_S):
        if width == DAY_S and lo not in days_with_finer:
            add(DAY_S, lo, hi)
            continue
        for h_lo, h_hi, h_width in _split(lo, hi, HOUR_S):
            add(HOUR_S if h_width == HOUR_S and h_lo not in hours_with_fine else 0, h_lo, h_hi)
    return segments


def _split(lo: int, hi: int, width: int) -> list[tuple[int, int, int]]:
    """[lo, hi) cut at multiples of width: (start, end, width) for whole pieces, (start,
    end, 0) for the partial ones at either end."""
    pieces = []
    at = lo
    while at < hi:
        end = min(hi, at - at % width + width)
        pieces.append((at, end, width if at % width == 0 and end - at == width else 0))
        at = end
    return pieces


def bin_rows_in(engine: Engine, since: int, until: int, chosen: Sequence[Source] = ()
                ) -> Iterator[tuple[Any, ...]]:
    """The rows of the bins that start in [since, until), at the finest resolution kept
    (_finest_segments), of the chosen sources (all when none): tuples in peer_bins'
    column order, by host, instance, time and peer."""
    c = peer_bins.c
    with engine.connect() as connection:
        for source in chosen or sources(engine):
            segments = _finest_segments(connection, source, since, until)
            query = sa.select(*peer_bins.columns).where(_read_where(source, segments)) \
                .order_by(c.bin_start, c.bin_seconds, c.peer)
            yield from (tuple(row) for row in connection.execute(query))


# A chart's points: (their width, the longest range drawn with them), seconds; 60 to 600
# points, as fine as the bins allow (bytes_over_time widens them to the bins it reads).
_CHART_POINTS = ((10, 1800), (60, 6 * HOUR_S), (FIVE_MINUTES_S, 2 * DAY_S), (HOUR_S, 25 * DAY_S))


def chart_width(since: int, until: int) -> int:
    """The width of a chart's points over [since, until), seconds."""
    span = until - since
    return next((width for width, longest in _CHART_POINTS if span <= longest), DAY_S)


def bytes_over_time(engine: Engine, since: int, until: int, chosen: Sequence[Source],
                    groups: Sequence[Sequence[str]] = ()
                    ) -> tuple[int, dict[int, int], list[dict[int, int]]]:
    """Bytes (both directions) per point over [since, until): (the points' width, the
    total by point start, each group's by point start: a group is a list of peers, summed
    by the database). The points are chart_width wide, or as wide as the coarsest bins the
    range still has; they are read from the widest summed bins no wider than a point (an
    hourly chart of a week reads 168 rows a peer, not 2016)."""
    totals: dict[int, int] = {}
    by_group: list[dict[int, int]] = [{} for _ in groups]
    with engine.connect() as connection:
        width = chart_width(since, until)
        chosen = chosen or sources(engine)
        for source in chosen:
            finest = _finest_segments(connection, source, since, until)
            coarsest = connection.execute(sa.select(sa.func.max(host_bins.c.bin_seconds))
                                          .where(_read_where(source, finest, host_bins))
                                          ).scalar()
            width = max(width, int(coarsest or 0))
        plans = [(source, _segments(since, until, _pending(connection, source, since, until),
                                    width)) for source in chosen]

        group_of = {peer: by_group[at] for at, members in enumerate(groups) for peer in members}
        peers = list(group_of)
        h, c = host_bins.c, peer_bins.c
        for source, segments in plans:
            # The range's bins, by width, from their totals (a row a bin)...
            starts: dict[int, list[int]] = {}
            for seconds, start, value in connection.execute(
                    sa.select(h.bin_seconds, h.bin_start, h.in_bytes + h.out_bytes)
                    .where(_read_where(source, segments, host_bins))):
                point = int(start) - int(start) % width
                totals[point] = totals.get(point, 0) + int(value)
                starts.setdefault(int(seconds), []).append(int(start))
            # ... then the groups' peers in exactly those bins: every column of the key
            # given, the database seeks each (bin, peer) row instead of scanning the
            # range's rows of every peer (a week's hourly chart of 500 peers out of
            # 10 000: 84 000 rows read, not 1.7 million).
            point_of = (c.bin_start - c.bin_start % width).label("point")
            for seconds, in_width in starts.items():
                for at in range(0, len(peers), 500):  # bound the statement's parameters
                    for start, peer, value in connection.execute(
                            sa.select(point_of, c.peer, sa.func.sum(c.in_bytes + c.out_bytes))
                            .where(_of(source), c.bin_seconds == seconds,
                                   c.bin_start.in_(in_width), c.peer.in_(peers[at:at + 500]))
                            .group_by(point_of, c.peer)).all():
                        into = group_of[str(peer)]
                        into[int(start)] = into.get(int(start), 0) + int(value)
    return width, totals, by_group


def sources(engine: Engine) -> list[Source]:
    """Every host and instance the database has rows of."""
    with engine.connect() as connection:
        return [Source(str(h), str(i)) for h, i in connection.execute(
            sa.select(peer_bins.c.host, peer_bins.c.instance).distinct()
            .order_by(peer_bins.c.host, peer_bins.c.instance))]


@contextmanager
def opened(text: str) -> Iterator[Engine]:
    """An engine for a --history URL with its schema current; disposed of at the end."""
    engine = connect(text)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def reading(text: str) -> Iterator[Engine]:
    """opened(), for the commands that read: a database error is a HistoryError, one line
    naming the database."""
    engine = connect(text, writing=False)
    try:
        with engine.connect() as connection:
            found = schema_version(connection)
        if found == 0:
            raise HistoryError(f"{shown(engine.url)} holds no ncebpf history (yet): "
                               "give --history the database the daemon writes")
        _refuse_newer(engine, found)
        # A reader never upgrades: it may only select (a report run as another user, or a
        # read-only file), and old daemons of other hosts may still write a shared
        # database. What it reads is in every version from READABLE_FROM on.
        if found < READABLE_FROM:
            raise HistoryError(f"{shown(engine.url)} has history schema version {found}, "
                               f"which reports no longer read: start the instance that "
                               "writes it once (it upgrades the database in place)")
        yield engine
    except sa.exc.SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0]
        raise HistoryError(f"cannot read the history in {shown(engine.url)}: {first}"
                           ) from None
    finally:
        engine.dispose()


def chosen_sources(engine: Engine, hosts: Sequence[str]) -> list[Source]:
    """The sources --host names (HOST or HOST/NAME; every one when none). Raises
    UsageError naming the sources there are when none matches."""
    known = sources(engine)
    unknown = [h for h in hosts if not any(h in (s.host, f"{s.host}/{s.instance}")
                                           for s in known)]
    if unknown:
        there = ", ".join(f"{s.host}/{s.instance}" for s in known) or "none yet"
        raise UsageError(f"--host {', '.join(unknown)}: not in the history (it has: {there})")
    return [s for s in known if not hosts or s.host in hosts or
            f"{s.host}/{s.instance}" in hosts]


def check_sqlite(text: str) -> str:
    """What keeps an existing SQLite history file from being written ('' when nothing
    does, or when the URL is not SQLite's or the file not there yet): not a database, a
    schema newer than this ncebpf's. Opens it read-only; creates nothing."""
    path = sqlite_path(text)
    if path is None or not os.path.isfile(path):
        return ""
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with engine.connect() as connection:
            version = schema_version(connection)
    except sa.exc.DatabaseError as exc:
        return f"{path} is not an SQLite database ({str(exc.orig).strip()})"
    finally:
        engine.dispose()
    if version > SCHEMA_VERSION:
        return (f"{path} has history schema version {version}, newer than this ncebpf's "
                f"{SCHEMA_VERSION}: upgrade ncebpf, or give another --history")
    return ""


def sqlite_file(text: str) -> tuple[int, int] | None:
    """The (device, inode) of an sqlite:/// URL's file: None for other databases and for
    a file that is not there. A writer holds its file open: one removed or replaced
    under it would take its rows into a file nobody can read."""
    path = sqlite_path(text)
    if path is None:
        return None
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def sqlite_path(text: str) -> str | None:
    """The file of an sqlite:/// URL, None for other databases."""
    match = re.match(r"sqlite(\+\w+)?:///(.+)$", text.strip(), re.IGNORECASE)
    return match.group(2) if match else None
