"""Reports over a time range: the history's sums as the Snapshot a report reads.

`ncebpf report --since ... [--until ...]` reads the database instead of a
dump; every --by and --format then works on the range as on a dump
(ncebpf.report). The peers' upstream fields are those of the range: R and W
its average hits and bytes per hour, S and E the first and last drain that
saw the peer move within it, B and C its bytes and packets; the exact
counts and their split by direction are the sums of the bins.

Times given by the operator (parse_time): an ISO 8601 date or date and
time (local time unless it carries an offset), or a span back from now:
90m, 24h, 7d, 2w.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import replace

from ncebpf.accounting import Others
from ncebpf.dump import stats_header
from ncebpf.errors import UsageError
from ncebpf.history import store
from ncebpf.report.model import Group, Peer, Report, Snapshot, TimeSeries

SERIES_GROUPS = 5  # the busiest groups drawn over time beside the total ...
SERIES_PEERS = 500  # ... whose members, all together, are read from at most this many peers

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SPAN_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float, option: str) -> int:
    """Epoch seconds of an operator's time: `24h` (that long before now), `2026-11-01`,
    `2026-11-01T08:00`, `2026-11-01 08:00+01:00`. Raises UsageError naming option."""
    given = text.strip()
    span = _SPAN.fullmatch(given)
    try:
        if span:
            epoch = int(now - float(span.group(1)) * _SPAN_S[span.group(2)])
        else:
            moment = datetime.datetime.fromisoformat(given)
            if moment.tzinfo is None:
                moment = moment.astimezone()  # local time, as date(1) reads it
            epoch = int(moment.timestamp())
    except (ValueError, OverflowError):
        raise UsageError(f"{option} {text!r}: give a date (2026-11-01), a date and time "
                         "(2026-11-01T08:00, local time unless an offset follows) or a span "
                         "back from now (90m, 24h, 7d, 2w)") from None
    if epoch < 0:
        raise UsageError(f"{option} {text!r} is before 1970: nothing was counted then")
    return epoch


def range_snapshot(sums: Sequence[store.PeerSums], since: int, until: int, source: str,
                   sources: Sequence[store.Source]) -> Snapshot:
    """The Snapshot of a range's sums (peer_sums), for the reports. Pure."""
    seconds = max(1, until - since)
    peers = tuple(
        Peer(address=s.peer, B=float(s.bytes), C=s.packets, E=s.last_seen, N=s.names,
             R=s.packets * 3600 / seconds, S=s.first_seen, T=0, W=s.bytes * 3600 / seconds,
             packets=s.packets, bytes=s.bytes, in_packets=s.in_packets, in_bytes=s.in_bytes,
             out_packets=s.out_packets, out_bytes=s.out_bytes)
        for s in sums)
    packets = sum(s.packets for s in sums)
    nbytes = sum(s.bytes for s in sums)
    hits, rate = packets * 60 / seconds, nbytes / seconds
    device = ", ".join(f"{s.host}/{s.instance}" for s in sources) or "no host"
    header = stats_header(since, until, hits, rate, len(peers), device, False, "", "", "", 0,
                          0, Others())
    header += f"# history:\t{store.when(since)} - {store.when(until)}, from {source}\n"
    totals: dict[str, int | None] = {
        "packets": packets, "bytes": nbytes,
        "in_packets": sum(s.in_packets for s in sums),
        "in_bytes": sum(s.in_bytes for s in sums),
        "out_packets": sum(s.out_packets for s in sums),
        "out_bytes": sum(s.out_bytes for s in sums),
    }
    return Snapshot(source=source, start=since, current=until, hits_per_minute=round(hits),
                    bytes_per_second=round(rate), users=len(peers), device=device,
                    promiscuous=False, filter="", header=header, peers=peers, mode="history",
                    totals=totals)


def history_snapshot(url: str, since: int, until: int, hosts: Sequence[str] = ()
                     ) -> Snapshot:
    """The Snapshot of [since, until) in the history database at url, of the hosts named
    (HOST or HOST/NAME; all when none). Raises HistoryError, UsageError."""
    if until <= since:
        raise UsageError(f"--until ({store.when(until)}) is not after --since "
                         f"({store.when(since)})")
    with store.reading(url) as engine:
        chosen = store.chosen_sources(engine, hosts)
        sums = store.peer_sums(engine, since, until, chosen)
        return range_snapshot(sums, since, until, store.shown(engine.url), chosen)


def drawn_groups(report: Report) -> tuple[list[Group], int]:
    """The busiest groups (SERIES_GROUPS at most) whose members, together, are no more than
    SERIES_PEERS peers (a chart reads each member's bins); and how many busier ones were
    left out for having too many. Pure."""
    drawn: list[Group] = []
    left_out = peers = 0
    for group in sorted(report.groups, key=lambda g: -(g.bytes or 0)):
        if len(drawn) == SERIES_GROUPS:
            break
        if peers + len(group.members) > SERIES_PEERS:
            left_out += 1
            continue
        drawn.append(group)
        peers += len(group.members)
    return drawn, left_out


def time_series(width: int, since: int, until: int, totals: dict[int, int],
                groups: Sequence[tuple[str, dict[int, int]]], left_out: int) -> TimeSeries:
    """Bytes per second at each point of [since, until) for the whole and for each
    (label, bytes by point start) of groups; left_out: busier groups not drawn. Pure."""
    starts = tuple(range(since - since % width, until, width))

    def rates(values: dict[int, int]) -> tuple[float, ...]:
        return tuple(values.get(start, 0) / width for start in starts)

    return TimeSeries(width, starts, rates(totals),
                      tuple((label, rates(values)) for label, values in groups), left_out)


def with_time_series(report: Report, url: str, hosts: Sequence[str] = ()) -> Report:
    """The report of a range (history_snapshot) with its bytes/s over time: the total and
    the busiest groups (drawn_groups)."""
    since, until = report.snapshot.start, report.snapshot.current
    drawn, left_out = drawn_groups(report)
    with store.reading(url) as engine:
        chosen = store.chosen_sources(engine, hosts)
        width, totals, by_group = store.bytes_over_time(
            engine, since, until, chosen, [[m.address for m in g.members] for g in drawn])
    groups = [(group.label, values) for group, values in zip(drawn, by_group, strict=True)]
    return replace(report, over_time=time_series(width, since, until, totals, groups,
                                                 left_out))
