"""Reports and exports over a range of the history (issue 14 items 3 and 4), the schema
upgrade from version 1, and the command line: SQLite files made by the test, no root."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from ncebpf.accounting import peer_key
from ncebpf.errors import UsageError
from ncebpf.history import store
from ncebpf.history.bins import OpenBin
from ncebpf.history.export import pieces
from ncebpf.history.query import parse_time, range_snapshot, time_series
from ncebpf.history.spool import Spool
from ncebpf.peerindex import key_array
from ncebpf.report.aggregate import aggregate
from ncebpf.report.model import Options
from tests.netns import NCEBPF

HOST = store.Source("h1", "t")
DAY = store.DAY_S
T0 = 1_790_000_000 - 1_790_000_000 % DAY
# Per 5-minute bin: (in packets, in bytes, out packets, out bytes)
TRAFFIC = {"10.77.1.1": (1, 100, 2, 300), "10.77.1.2": (3, 500, 0, 0),
           "fd77:1::1": (5, 700, 5, 900)}


def write_day(engine: sa.Engine, source: store.Source = HOST, start: int = T0,
              bins: int = 288) -> None:
    for n in range(bins):
        opened = OpenBin(start + 300 * n, 300)
        opened.add(key_array(b"".join(peer_key(a) for a in TRAFFIC)),
                   np.array(list(TRAFFIC.values()), dtype=np.uint64), start + 300 * n + 7)
        store.write_bin(engine, source, opened.closed().with_names({0: ("a.example.co.uk",)}),
                        start + DAY)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    with store.opened(f"sqlite:///{path}") as engine:
        write_day(engine)
        write_day(engine, store.Source("h2", "t"), bins=12)  # one hour of a second host
        store.roll_up(engine, HOST, T0 + DAY + 3600)
        store.roll_up(engine, store.Source("h2", "t"), T0 + DAY + 3600)
    return path


def test_times_an_operator_types() -> None:
    now = 1_800_000_000.0
    assert parse_time("24h", now, "--since") == now - 86400
    assert parse_time("90m", now, "--since") == now - 5400
    assert parse_time("2w", now, "--since") == now - 14 * 86400
    assert parse_time("2026-11-01T08:00+01:00", now, "--since") == 1_793_516_400
    with pytest.raises(UsageError, match="--until 'yesterday': give a date"):
        parse_time("yesterday", now, "--until")


def test_a_range_is_a_snapshot_every_report_reads(database: Path) -> None:
    with store.opened(f"sqlite:///{database}") as engine:
        sums = store.peer_sums(engine, T0, T0 + DAY, [HOST])
    snapshot = range_snapshot(sums, T0, T0 + DAY, "test", [HOST])
    peers = {p.address: p for p in snapshot.peers}
    first = peers["10.77.1.1"]
    assert (first.in_packets, first.in_bytes, first.out_packets, first.out_bytes) == \
        (288, 28800, 576, 86400)
    assert first.N == ("a.example.co.uk",)
    assert first.W == pytest.approx((28800 + 86400) * 3600 / DAY)
    assert (first.S, first.E) == (T0 + 7, T0 + DAY - 300 + 7)
    assert snapshot.totals["packets"] == 288 * 16
    assert "# history:\t" in snapshot.header
    report = aggregate(snapshot, Options(by="domain"))
    assert {g.key for g in report.groups} >= {"example.co.uk"}


def test_the_chart_over_time_sums_what_the_report_counts(database: Path) -> None:
    with store.opened(f"sqlite:///{database}") as engine:
        sums = store.peer_sums(engine, T0, T0 + DAY, [HOST])
        width, totals, (v6, v4) = store.bytes_over_time(
            engine, T0, T0 + DAY, [HOST], [["fd77:1::1"], ["10.77.1.1", "10.77.1.2"]])
    assert width == 300
    assert sum(totals.values()) == sum(s.bytes for s in sums)
    series = time_series(width, T0, T0 + DAY, totals, [("fd77:1::1", v6), ("v4", v4)], 0)
    assert len(series.starts) == 288 and series.total[0] == pytest.approx(2500 / 300)
    assert series.groups[0] == ("fd77:1::1", tuple([1600 / 300] * 288))
    assert series.groups[1] == ("v4", tuple([900 / 300] * 288))


def test_a_chart_reads_each_part_of_a_range_from_its_own_bins(database: Path) -> None:
    """A week's hourly chart over a summed day (hourly bins) and a day not yet summed
    (5-minute bins): the groups' points come from the bins of both widths."""
    with store.opened(f"sqlite:///{database}") as engine:
        write_day(engine, start=T0 + DAY)  # its hours wait to be summed
        sums = store.peer_sums(engine, T0, T0 + 7 * DAY, [HOST])
        width, totals, (v6, v4) = store.bytes_over_time(
            engine, T0, T0 + 7 * DAY, [HOST], [["fd77:1::1"], ["10.77.1.1", "10.77.1.2"]])
    by_peer = {s.peer: s.bytes for s in sums}
    assert width == 3600
    assert sum(totals.values()) == sum(by_peer.values()) == 2 * 288 * 2500
    assert sum(v6.values()) == by_peer["fd77:1::1"] == 2 * 288 * 1600
    assert sum(v4.values()) == by_peer["10.77.1.1"] + by_peer["10.77.1.2"]
    assert sorted(v4) == sorted(totals) == [T0 + 3600 * h for h in range(48)]
    assert set(v4.values()) == {12 * 900}


def test_an_export_is_the_rows_at_the_finest_resolution_kept(database: Path) -> None:
    with store.opened(f"sqlite:///{database}") as engine:
        rows = list(store.bin_rows_in(engine, T0, T0 + DAY, [HOST]))
        # Drop the 5-minute bins of the day's first hour: the export reads its hourly bin.
        with engine.begin() as connection:
            connection.execute(sa.delete(store.peer_bins).where(
                store.peer_bins.c.bin_seconds == 300, store.peer_bins.c.bin_start < T0 + 3600))
            connection.execute(sa.delete(store.host_bins).where(
                store.host_bins.c.bin_seconds == 300, store.host_bins.c.bin_start < T0 + 3600))
        coarser = list(store.bin_rows_in(engine, T0, T0 + DAY, [HOST]))
    assert len(rows) == 288 * 3 and {r[2] for r in rows} == {300}
    assert len(coarser) == 276 * 3 + 3 and sorted({r[2] for r in coarser}) == [300, 3600]
    text = "".join(pieces(iter(rows), "csv"))
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == len(rows)
    assert records[0]["bin_start_utc"].endswith("Z") and records[0]["peer"] == "10.77.1.1"
    assert records[0]["names"] == "a.example.co.uk"
    as_json = json.loads("".join(pieces(iter(rows), "json")))
    assert [r["in_bytes"] for r in as_json] == [int(r["in_bytes"]) for r in records]
    assert json.loads("".join(pieces(iter([]), "json"))) == []


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*NCEBPF, *args], capture_output=True, text=True, check=False,
                            timeout=120, env=dict(os.environ, TZ="UTC"))
    assert result.returncode == 0 or not check, result.stderr
    return result


def test_report_since_reads_the_instances_history(database: Path) -> None:
    iso = "2026-09-21T00:00:00+00:00"
    assert parse_time(iso, 0, "--since") == T0
    out = cli("report", "--since", iso, "--until", "2026-09-22T00:00:00+00:00",
              "--statedir", str(database.parent), "--name", "t", "--by", "peer",
              "--host", "h1", "--format", "json").stdout
    document = json.loads(out)
    assert document["dump"]["totals"]["bytes"] == 288 * 2500
    assert document["totals"]["peers"] == 3
    html = cli("report", "--since", iso, "--until", "2026-09-22T00:00:00+00:00",
               "--history", f"sqlite:///{database}", "--format", "html").stdout
    over_time = html.split('aria-label="bytes per second over time"')[1].split("</section>")[0]
    assert "<svg" in over_time and "<script" not in over_time
    both = json.loads(cli("report", "--since", iso, "--until", "2026-09-22T00:00:00+00:00",
                          "--history", f"sqlite:///{database}", "--format", "json").stdout)
    assert both["dump"]["totals"]["bytes"] == 300 * 2500  # h2's hour too


def test_a_report_reads_the_database_the_instance_last_wrote_to(tmp_path: Path,
                                                               database: Path) -> None:
    """An instance given --history on its command line: its spool notes the URL, and a
    report of the instance needs no --history."""
    statedir = tmp_path / "state"
    Spool(statedir / "t.history", 10).note_database(f"sqlite:///{database}")
    assert (statedir / "t.history" / "database").stat().st_mode & 0o777 == 0o600
    out = cli("report", "--since", "2026-09-21T00:00:00+00:00", "--until",
              "2026-09-22T00:00:00+00:00", "--statedir", str(statedir), "--name", "t",
              "--host", "h1", "--format", "json").stdout
    assert json.loads(out)["dump"]["totals"]["bytes"] == 288 * 2500


def test_history_errors_say_what_to_do(tmp_path: Path, database: Path) -> None:
    missing = cli("report", "--since", "24h", "--statedir", str(tmp_path / "none"), "--name",
                  "t", check=False)
    assert missing.returncode == 1 and "no history database" in missing.stderr
    unknown = cli("report", "--since", "7d", "--history", f"sqlite:///{database}", "--host",
                  "h9", check=False)
    assert unknown.returncode == 2 and "not in the history (it has: h1/t, h2/t)" in \
        unknown.stderr
    both = cli("report", "--since", "7d", str(database), check=False)
    assert both.returncode == 2 and "give a SOURCE or --since, not both" in both.stderr
    backwards = cli("report", "--since", "1h", "--until", "2h", "--history",
                    f"sqlite:///{database}", check=False)
    assert backwards.returncode == 2 and "is not after --since" in backwards.stderr


def test_history_export_from_the_command_line(database: Path) -> None:
    out = cli("history", "export", "--since", "2026-09-21T00:00:00+00:00", "--until",
              "2026-09-21T01:00:00+00:00", "--history", f"sqlite:///{database}").stdout
    records = list(csv.DictReader(io.StringIO(out)))
    assert len(records) == 12 * 3 * 2  # two hosts, an hour of 5-minute bins
    assert {r["host"] for r in records} == {"h1", "h2"}


def test_a_chart_draws_the_busiest_groups_it_can_read() -> None:
    from ncebpf.history import query
    from ncebpf.report.model import Peer as ReportPeer

    def peer(address: str, nbytes: int) -> ReportPeer:
        return ReportPeer(address, 0.0, 1, T0, (), 0.0, T0, 0, float(nbytes), 1, nbytes)

    many = tuple(peer(f"fd77:1::{i:x}", 10**9) for i in range(query.SERIES_PEERS + 1))
    few = tuple(peer(f"10.77.{g}.1", 10**6 * (9 - g)) for g in range(7))
    snapshot = range_snapshot([], T0, T0 + DAY, "test", [HOST])
    report = aggregate(snapshot.__class__(**{**snapshot.__dict__, "peers": many + few}),
                       Options(by="cidr"))
    drawn, left_out = query.drawn_groups(report)
    assert left_out == 1  # fd77:1::/48, the busiest, has too many peers to read
    assert [g.key for g in drawn] == [f"10.77.{g}.0/24" for g in range(query.SERIES_GROUPS)]


def test_more_history_errors_say_what_to_do(tmp_path: Path, database: Path) -> None:
    url = f"sqlite:///{database}"
    typo = cli("report", "--since", "7d", "--history", url, "--host", "h1", "--host", "h9",
               check=False)
    assert typo.returncode == 2 and "--host h9: not in the history" in typo.stderr
    missing = cli("history", "export", "--statedir", str(tmp_path), "--name", "none",
                  check=False)
    assert missing.returncode == 1 and "no history database" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3_connect(empty)
    foreign = cli("report", "--since", "1h", "--history", f"sqlite:///{empty}", check=False)
    assert foreign.returncode == 1 and "holds no ncebpf history" in foreign.stderr
    ancient = cli("report", "--since", "99999999d", "--history", url, check=False)
    assert ancient.returncode == 2 and "is before 1970" in ancient.stderr
    bad_url = cli("history", "export", "--history", "foo://bar", check=False)
    assert bad_url.returncode == 2 and "'foo' databases are not supported" in bad_url.stderr
    empty_since = cli("report", "--since", "", "--history", url, check=False)
    assert empty_since.returncode == 2 and "--since ''" in empty_since.stderr  # not 24h
    relative = cli("report", "--since", "1h", "--history", "sqlite:///rel.db", check=False)
    assert relative.returncode == 2 and "relative to the working directory" in relative.stderr
    future = cli("report", "--since", "2099-01-01", "--history", url, check=False)
    assert future.returncode == 2 and "--since '2099-01-01'" in future.stderr and \
        "is in the future" in future.stderr
    ahead = json.loads(cli("report", "--since", "2026-09-21", "--until", "2099-01-01",
                           "--history", url, "--format", "json").stdout)
    assert ahead["dump"]["current"] <= time.time() + 5  # the range ends now


def test_history_and_no_history_together_are_refused() -> None:
    both = cli("config", "--no-history", "--history", "sqlite:////tmp/ncebpf-t.db",
               check=False)
    assert both.returncode == 2 and "--history URL or --no-history, not both" in both.stderr


def sqlite3_connect(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x)")


def test_until_alone_reads_the_day_before_it(database: Path) -> None:
    out = cli("report", "--until", "2026-09-22T00:00:00+00:00", "--history",
              f"sqlite:///{database}", "--host", "h1", "--format", "json").stdout
    assert json.loads(out)["dump"]["totals"]["bytes"] == 288 * 2500


def test_anyone_who_may_read_the_file_reads_the_history(database: Path,
                                                        privileged: None) -> None:
    """A report from cron as www-data: the file and its directory readable, not writable,
    and no daemon has it open (no -wal or -shm to share)."""
    shared = Path(tempfile.mkdtemp(prefix="ncebpf-history-", dir="/tmp"))  # pytest's is 0700
    try:
        os.chmod(shared, 0o755)
        copy = shutil.copy(database, shared / "t.db")
        os.chmod(copy, 0o644)
        out = subprocess.run(["runuser", "-u", "nobody", "--", *NCEBPF, "report", "--since",
                              "2026-09-21T00:00:00+00:00", "--until",
                              "2026-09-22T00:00:00+00:00", "--history",
                              f"sqlite:///{copy}", "--format", "json"],
                             capture_output=True, text=True, check=False, cwd="/")
    finally:
        shutil.rmtree(shared)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["dump"]["totals"]["bytes"] == 300 * 2500


def test_a_short_range_is_drawn_with_points_as_fine_as_its_bins(tmp_path: Path) -> None:
    """Ten minutes of 60-second bins: ten points of 60 s, not one of five minutes."""
    with store.opened(f"sqlite:///{tmp_path / 'short.db'}") as engine:
        for n in range(10):
            opened = OpenBin(T0 + 60 * n, 60)
            opened.add(key_array(peer_key("10.77.1.1")), np.array([[1, 60 * (n + 1), 0, 0]],
                                                                  dtype=np.uint64), T0 + 60 * n)
            store.write_bin(engine, HOST, opened.closed(), T0 + 600)
        width, totals, _ = store.bytes_over_time(engine, T0, T0 + 600, [HOST])
    assert width == 60
    assert totals == {T0 + 60 * n: 60 * (n + 1) for n in range(10)}
    assert store.chart_width(T0, T0 + 7 * DAY) == 3600


def test_a_chart_of_bins_under_a_minute_names_its_points_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "fine.db"
    with store.opened(f"sqlite:///{path}") as engine:
        for n in range(12):
            opened = OpenBin(T0 + 10 * n, 10)
            opened.add(key_array(peer_key("10.77.1.1")), np.array([[1, 100, 0, 0]],
                                                                  dtype=np.uint64), T0 + 10 * n)
            store.write_bin(engine, HOST, opened.closed(), T0 + 120)
    html = cli("report", "--since", "2026-09-21T00:00:00+00:00", "--until",
               "2026-09-21T00:02:00+00:00", "--history", f"sqlite:///{path}",
               "--format", "html").stdout
    assert "Bytes/s over time (10-second points)" in html
