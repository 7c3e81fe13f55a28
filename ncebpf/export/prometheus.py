"""Prometheus metrics of a running instance: a sink of the drain (design §1, stage 2).

`--metrics ADDR:PORT` serves /metrics alone, `--http` serves it beside the
reports (ncebpf.http); both through prometheus-client's exposition, in the
text format or OpenMetrics as the scraper asks.

Every figure is taken on the loop's thread right after a drain, into one
immutable Sample that a scrape, on the HTTP server's thread, reads whole: a
scrape never sees half a drain, and the loop never waits for a scrape.
Counters are the table's, since the start or the last reset (HUP), which
rate() and increase() read as a counter reset; a restart goes on from the
checkpoint and resets nothing.

Cardinality stays bounded under a spoofed-source flood: per-peer series only
for the top N peers by bytes (--metrics-top, default 50), or with
--metrics-by cidr for the top N prefixes (/24 and /48, as `ncebpf report
--by cidr` groups them). Names and units follow Prometheus's conventions
(https://prometheus.io/docs/practices/naming/): `_total` counters, `_bytes`,
`_seconds`, one metric per quantity with labels for its parts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from ncebpf.accounting import PeerTable, Totals, bytes_of, peer_text
from ncebpf.collector import DrainReport
from ncebpf.config import DEFAULT_METRICS_TOP, MetricsBy
from ncebpf.peerindex import key_bytes

CIDR4, CIDR6 = 24, 48  # the reports' --by cidr defaults (ncebpf.report.model.Options)
# A drain of 100 peers takes milliseconds, one of a million peers about a second.
DRAIN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DIRECTIONS = ("in", "out")  # the dump's in_/out_ fields: in = the peer sent it
DUMP_REQUEST_LABELS = tuple((via, result) for via in ("control", "udp", "signal")
                            for result in ("written", "failed"))
DNS_RESULTS = ("name", "no_name", "no_answer")  # ncebpf.resolve.lookup_result
# Totals fields that count frames not under a peer, by the outcome label they get.
UNMATCHED_OUTCOMES = ("filtered_out", "unparsed", "unattributed", "overflow", "dropped")


@dataclass(frozen=True)
class Ranked:
    """A peer (its address) or a prefix (`10.77.1.0/24`) and its counters since it was
    first seen: in packets, in bytes, out packets, out bytes."""

    label: str
    counts: tuple[int, int, int, int]


@dataclass(frozen=True)
class Sample:
    """What a scrape shows, as of one drain. dumps: (via, result) -> requests; dns:
    result -> lookups finished."""

    totals: Totals
    peers: int
    capacity: int
    started: int  # epoch seconds: the table's start or last reset
    top: tuple[Ranked, ...]
    dumps_written: int = 0
    dumps: Mapping[tuple[str, str], int] = field(default_factory=dict)
    dns: Mapping[str, int] = field(default_factory=dict)


def top_peers(table: PeerTable, n: int) -> tuple[Ranked, ...]:
    """The n listed peers with the most bytes (both directions) since first seen, most
    first. Pure; argpartition, so a million peers cost one pass, not a sort."""
    rows = table.listed_rows()
    if n <= 0 or not len(rows):
        return ()
    counts = table.counts[rows]
    order = _largest(bytes_of(counts), n)
    counts = counts[order]
    keys = table.index.keys[rows[order]].tolist()
    return tuple(Ranked(peer_text(key), _four(row))
                 for key, row in zip(keys, counts.tolist(), strict=True))


def _largest(values: npt.NDArray[np.uint64], n: int) -> npt.NDArray[np.intp]:
    """Positions of the n largest values, largest first (ties: the earlier first); one pass
    (argpartition) before sorting only those n."""
    chosen = np.arange(len(values)) if len(values) <= n else \
        np.sort(np.argpartition(values, len(values) - n)[len(values) - n:])
    # Ascending by value, then by position backwards; reversed: largest first, earlier first.
    order: npt.NDArray[np.intp] = chosen[np.lexsort((-chosen, values[chosen]))[::-1]]
    return order


def _four(row: list[int]) -> tuple[int, int, int, int]:
    in_packets, in_bytes, out_packets, out_bytes = row
    return int(in_packets), int(in_bytes), int(out_packets), int(out_bytes)


def top_prefixes(table: PeerTable, n: int, cidr4: int = CIDR4, cidr6: int = CIDR6
                 ) -> tuple[Ranked, ...]:
    """The n prefixes (IPv4 /cidr4, IPv6 /cidr6, at most /64) with the most bytes over their
    listed peers, most first, each with its peers' summed counters. Pure; each prefix is a
    64-bit integer, grouped by one sort per family (a million peers: about 0.1 s)."""
    if not 0 <= cidr4 <= 32 or not 0 <= cidr6 <= 64:
        raise ValueError(f"prefix lengths /{cidr4} and /{cidr6}: at most /32 and /64")
    rows = table.listed_rows()
    if n <= 0 or not len(rows):
        return ()
    raw = key_bytes(table.index.keys[rows])  # IPv4 as ::ffff:a.b.c.d
    is_v4 = raw[:, 0] == 4
    ranked: list[tuple[int, str, tuple[int, int, int, int]]] = []
    for members, first, width, length in ((is_v4, 16, 4, cidr4), (~is_v4, 4, 8, cidr6)):
        if not members.any():
            continue
        addresses = np.ascontiguousarray(raw[members, first:first + width]).view(
            f">u{width}").ravel().astype(np.uint64)
        keep = (1 << (8 * width)) - (1 << (8 * width - length)) if length else 0
        prefixes, sums = _sums_by(addresses & np.uint64(keep), table.counts[rows[members]])
        best = _largest(bytes_of(sums), n)
        for prefix, counts in zip(prefixes[best].tolist(), sums[best].tolist(), strict=True):
            address = ipaddress.IPv4Address(prefix) if width == 4 else \
                ipaddress.IPv6Address(prefix << 64)
            four = _four(counts)
            ranked.append((four[1] + four[3], f"{address}/{length}", four))
    ranked.sort(key=lambda r: -r[0])  # stable: IPv4 before IPv6 on a tie
    return tuple(Ranked(label, counts) for _, label, counts in ranked[:n])


def _sums_by(groups: npt.NDArray[np.uint64], counts: npt.NDArray[np.uint64]
             ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """(each distinct group, the sum of its rows of counts), exactly in uint64."""
    order = np.argsort(groups)  # any order among equals: sums do not mind
    groups, counts = groups[order], counts[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sums: npt.NDArray[np.uint64] = np.add.reduceat(counts, starts, axis=0)
    return groups[starts], sums


def families(sample: Sample, labels: Mapping[str, str], by: MetricsBy,
             drain: Histogram | None = None) -> Iterator[Metric]:
    """The metric families of one sample (README "Prometheus" lists them). Pure."""
    yield InfoMetricFamily("ncebpf", "The instance: its name, interface, mode and filter.",
                           value=dict(labels))
    totals = sample.totals
    # Built by hand: the matched frames carry a direction, the others none (an empty label
    # would be a label all the same in the text, if not in Prometheus).
    frames = Metric("ncebpf_frames", "Frames seen, by outcome: matched (counted under a "
                    "peer, by direction), filtered_out, unparsed, unattributed, overflow "
                    "(peer map full), dropped (lost before counting).", "counter")
    octets = CounterMetricFamily(
        "ncebpf_bytes", "Bytes of the frames counted under a peer, by direction.",
        labels=("outcome", "direction"))
    for direction, packets, nbytes in (("in", totals.in_packets, totals.in_bytes),
                                       ("out", totals.out_packets, totals.out_bytes)):
        frames.add_sample("ncebpf_frames_total", {"outcome": "matched",
                                                  "direction": direction}, packets)
        octets.add_metric(("matched", direction), nbytes)
    for outcome in UNMATCHED_OUTCOMES:
        if outcome not in totals.unknown:  # a count this source cannot know: no series
            frames.add_sample("ncebpf_frames_total", {"outcome": outcome},
                              getattr(totals, outcome))
    yield frames
    yield octets
    yield GaugeMetricFamily("ncebpf_peers", "Peers in the table.", value=sample.peers)
    yield GaugeMetricFamily("ncebpf_peer_map_capacity",
                            "Peers the map holds before new ones count as overflow.",
                            value=sample.capacity)
    yield GaugeMetricFamily("ncebpf_start_time_seconds",
                            "When counting started or was last reset (HUP), Unix time.",
                            value=sample.started)
    yield CounterMetricFamily("ncebpf_dumps_written", "Dumps written (both files).",
                              value=sample.dumps_written)
    requests = CounterMetricFamily(
        "ncebpf_dump_requests", "Dump requests answered, by who asked (control: `ncebpf "
        "dump` and --http; udp; signal: USR1 or HUP) and result.", labels=("via", "result"))
    for (via, result), count in sorted(sample.dumps.items()):
        requests.add_metric((via, result), count)
    yield requests
    lookups = CounterMetricFamily(
        "ncebpf_dns_lookups", "Reverse DNS lookups finished, by result: name, no_name "
        "(NXDOMAIN or no PTR), no_answer (every server tried).", labels=("result",))
    for result, count in sorted(sample.dns.items()):
        lookups.add_metric((result,), count)
    yield lookups
    what, whats = ("peer", "peers") if by == "peer" else ("prefix", "prefixes")
    top_frames = CounterMetricFamily(
        f"ncebpf_{what}_frames", f"Frames of the top {whats} by bytes, since each was first "
        "seen, by direction.", labels=(what, "direction"))
    top_bytes = CounterMetricFamily(
        f"ncebpf_{what}_bytes", f"Bytes of the top {whats} by bytes, since each was first "
        "seen, by direction.", labels=(what, "direction"))
    for ranked in sample.top:
        in_packets, in_bytes, out_packets, out_bytes = ranked.counts
        for direction, packets, nbytes in (("in", in_packets, in_bytes),
                                           ("out", out_packets, out_bytes)):
            top_frames.add_metric((ranked.label, direction), packets)
            top_bytes.add_metric((ranked.label, direction), nbytes)
    yield top_frames
    yield top_bytes
    if drain is not None:
        yield from drain.collect()


class Metrics:
    """The instance's registry. drained() takes a Sample after each drain (the loop's
    thread); exposition() renders the last one for a scrape (any thread).

    labels: the info metric's (name, interface, mode, filter). sample_inputs() gives what
    the table does not hold: (capacity, dumps written, dump requests, DNS results)."""

    def __init__(self, labels: Mapping[str, str], top: int = DEFAULT_METRICS_TOP,
                 by: MetricsBy = "peer") -> None:
        self.labels, self.top, self.by = dict(labels), top, by
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: ncebpf_start_time_seconds says it
        self.registry = CollectorRegistry(auto_describe=False)
        # Observed on the loop's thread, read by scrapes: prometheus-client locks it.
        self.drain_seconds = Histogram(
            "ncebpf_drain_duration_seconds", "Time a drain of the counters took.",
            buckets=DRAIN_BUCKETS_S, registry=None)
        self._sample: Sample | None = None
        self.registry.register(self)  # a custom collector: collect() below

    def drained(self, report: DrainReport, table: PeerTable, capacity: int,
                dumps_written: int = 0, dumps: Mapping[tuple[str, str], int] | None = None,
                dns: Mapping[str, int] | None = None) -> None:
        """After a drain: its duration, and a new sample."""
        self.drain_seconds.observe(report.seconds)
        self.take(table, capacity, dumps_written, dumps, dns)

    def take(self, table: PeerTable, capacity: int, dumps_written: int = 0,
             dumps: Mapping[tuple[str, str], int] | None = None,
             dns: Mapping[str, int] | None = None) -> None:
        """A sample of the table as it is (at the start too: a restart's table comes from
        its checkpoint, and its series must not vanish until the first drain)."""
        top = top_peers(table, self.top) if self.by == "peer" else \
            top_prefixes(table, self.top)
        # Every known label pair from the start, at 0: increase() sees the first event.
        requests = dict.fromkeys(DUMP_REQUEST_LABELS, 0) | dict(dumps or {})
        lookups = dict.fromkeys(DNS_RESULTS, 0) | dict(dns or {})
        # One assignment: a scrape reads the old sample or the new one, never a mix.
        self._sample = Sample(table.totals, table.listed_count, capacity, table.start, top,
                              dumps_written, requests, lookups)

    def collect(self) -> Iterator[Metric]:
        sample = self._sample
        if sample is None:  # before the first drain: only the instance
            yield InfoMetricFamily("ncebpf", "The instance: its name, interface, mode and "
                                   "filter.", value=dict(self.labels))
            return
        yield from families(sample, self.labels, self.by, self.drain_seconds)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, Content-Type) of a scrape whose Accept header is accept."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
