"""What `ncebpf top` shows, as one value: the rates grouped, filtered and sorted. Pure.

Rows are peers, or groups of peers cut by the reports' own rule
(ncebpf.report.aggregate.group_of: prefixes, registrable domains). A
group's rates and counts are its members' sums, its first seen the
earliest, its last seen the latest. The filter keeps the peers whose
address or a name holds the text (case-insensitive), before grouping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import IN_BYTES, IN_PACKETS, OUT_BYTES, OUT_PACKETS, peer_text
from ncebpf.report.aggregate import group_of
from ncebpf.report.model import Options
from ncebpf.top.rates import PeerRates, TotalRates
from ncebpf.top.wire import Header

Sort = Literal["rate", "total", "packets"]
By = Literal["peer", "cidr", "domain"]
SORTS: tuple[Sort, ...] = ("rate", "total", "packets")
BYS: tuple[By, ...] = ("peer", "cidr", "domain")
RATE_WINDOW = 1  # the 10-second average orders by rate, as iftop's default (-o 10s)
# The header's counters of frames under no peer; they are highlighted when they grow.
COUNTERS = ("filtered_out", "unparsed", "unattributed", "overflow", "dropped")


@dataclass(frozen=True)
class Line:
    """One row: a peer or a group. Rates are bytes/s over 2, 10 and 40 s; in and out
    rates and packets/s over 10 s; bytes and packets since first seen; first/last seen
    are drain epoch seconds (a group's earliest and latest)."""

    label: str
    names: str
    peers: int
    rates: tuple[float, float, float]
    in_rate: float
    out_rate: float
    packet_rate: float
    bytes: int
    packets: int
    first_seen: int
    last_seen: int


@dataclass(frozen=True)
class Lines:
    """The rows shown, in order, as columns (n rows): labels and names (", "-joined, ""
    when none) as texts; rates (n, 3) bytes/s over 2, 10, 40 s; in, out bytes/s and
    packets/s over 10 s; bytes and packets since first seen; peers per row; first and last
    seen (drain epoch s). Iterating gives Line values; --batch reads the columns."""

    labels: list[str]
    names: list[str]
    peers: npt.NDArray[np.int64]
    rates: npt.NDArray[np.float64]
    in_rate: npt.NDArray[np.float64]
    out_rate: npt.NDArray[np.float64]
    packet_rate: npt.NDArray[np.float64]
    bytes: npt.NDArray[np.float64]
    packets: npt.NDArray[np.float64]
    first_seen: npt.NDArray[np.int64]
    last_seen: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, at: int) -> Line:
        rates = self.rates[at]
        return Line(label=self.labels[at], names=self.names[at], peers=int(self.peers[at]),
                    rates=(float(rates[0]), float(rates[1]), float(rates[2])),
                    in_rate=float(self.in_rate[at]), out_rate=float(self.out_rate[at]),
                    packet_rate=float(self.packet_rate[at]), bytes=int(self.bytes[at]),
                    packets=int(self.packets[at]), first_seen=int(self.first_seen[at]),
                    last_seen=int(self.last_seen[at]))

    def __iter__(self) -> Iterator[Line]:
        return (self[at] for at in range(len(self)))


@dataclass(frozen=True)
class Counter:
    """A header counter: its value (None: the mode cannot know it) and its growth over the
    last 10 s."""

    name: str
    value: int | None
    growth: int


@dataclass(frozen=True)
class ViewOptions:
    sort: Sort = "rate"
    by: By = "peer"
    search: str = ""  # substring filter over addresses and names
    paused: bool = False


@dataclass(frozen=True)
class View:
    """A screenful's worth: the header, and up to `limit` lines in order."""

    header: Header
    options: ViewOptions
    frame_rate: float  # frames/s over 10 s, every outcome
    byte_rates: tuple[float, float, float]  # matched bytes/s over 2, 10, 40 s
    counters: tuple[Counter, ...]
    lines: Lines
    matching: int  # lines that pass the filter, shown or not
    spans: tuple[float, float, float]  # seconds each window covers so far
    note: str = ""
    now: float = 0.0  # epoch seconds the view was made (ages are against it)
    stale: bool = False  # the instance stopped answering: the figures are not live


class Labels:
    """Address texts and group labels of a PeerRates's rows, each made once (a group's
    again when the row's names change). A row keeps its key until the rates start over."""

    def __init__(self, rates: PeerRates) -> None:
        self._rates = rates
        self._resets = -1
        self._sync()

    def _sync(self) -> None:
        rates = self._rates
        if self._resets != rates.resets:
            self._resets = rates.resets
            self._text: dict[int, str] = {}
            self._ids: dict[By, npt.NDArray[np.int64]] = {}  # row -> label id; -1 unknown
            self._labels: dict[By, list[str]] = {}
            self._known: dict[By, dict[str, int]] = {}
        if rates.renamed:
            renamed = np.array(rates.renamed, dtype=np.int64)
            for ids in self._ids.values():
                ids[renamed[renamed < len(ids)]] = -1
            rates.renamed = []

    def address(self, row: int) -> str:
        self._sync()
        text = self._text.get(row)
        if text is None:
            text = self._text[row] = peer_text(self._rates.index.keys[row].tobytes())
        return text

    def groups(self, rows: npt.NDArray[np.int64], by: By
               ) -> tuple[list[str], npt.NDArray[np.int64]]:
        """(labels, each row's position among them) of the groups these rows' peers join
        by `by` (ncebpf.report.aggregate.group_of); only the groups of these rows."""
        self._sync()
        ids = self._ids.get(by, np.zeros(0, dtype=np.int64))
        if len(ids) < self._rates.index.high:
            ids = np.concatenate([ids, np.full(self._rates.index.high - len(ids), -1,
                                               dtype=np.int64)])
            self._ids[by] = ids
        labels = self._labels.setdefault(by, [])
        known = self._known.setdefault(by, {})
        for row in rows[ids[rows] < 0].tolist():
            _, label, _ = group_of(self.address(row), self._rates.names.get(row, ()),
                                   Options(by=by))
            ids[row] = known.setdefault(label, len(labels))
            if ids[row] == len(labels):
                labels.append(label)
        present, inverse = np.unique(ids[rows], return_inverse=True)
        return [labels[i] for i in present.tolist()], inverse.reshape(-1)


def counters(header: Header, totals: TotalRates) -> tuple[Counter, ...]:
    """The header's counters with their growth over the last 10 s (TotalRates fed
    `counter_values`)."""
    _, growth = totals.over(10.0)
    result = []
    for at, name in enumerate(COUNTERS):
        value = header.totals.get(name)
        grown = int(growth[2 + at]) if len(growth) > 2 + at and value is not None else 0
        result.append(Counter(name, value if isinstance(value, int) else None, grown))
    return tuple(result)


def counter_values(header: Header) -> npt.NDArray[np.float64]:
    """What TotalRates follows: frames (every outcome), matched bytes, then COUNTERS."""
    totals = header.totals
    values = [totals.get(name) or 0 for name in COUNTERS]
    frames = (totals.get("packets") or 0) + sum(values)
    return np.array([frames, totals.get("bytes") or 0, *values], dtype=np.float64)


def build(rates: PeerRates, totals: TotalRates, header: Header, labels: Labels,
          options: ViewOptions, limit: int, now: float, note: str = "") -> View:
    """The view of the latest answer: at most limit lines, in options.sort order
    (highest first; ties by label). now: epoch seconds, for the ages shown."""
    rows = rates.listed_rows()
    per_second = rates.rates()[:, rows, :]
    counts = rates.counts[rows]
    if options.search:
        needle = options.search.lower()
        keep = np.array([needle in labels.address(r).lower()
                         or any(needle in n.lower() for n in rates.names.get(r, ()))
                         for r in rows.tolist()], dtype=np.bool_).reshape(-1)
        rows, per_second, counts = rows[keep], per_second[:, keep, :], counts[keep]
    both = per_second[:, :, IN_BYTES] + per_second[:, :, OUT_BYTES]  # (windows, n)
    ten = per_second[RATE_WINDOW]
    # Float columns: counts below 2^53 (8 PiB) are exact in them, and so are their sums.
    columns = {
        "rate0": both[0], "rate1": both[1], "rate2": both[2],
        "in": ten[:, IN_BYTES], "out": ten[:, OUT_BYTES],
        "pps": ten[:, IN_PACKETS] + ten[:, OUT_PACKETS],
        "bytes": (counts[:, IN_BYTES] + counts[:, OUT_BYTES]).astype(np.float64),
        "packets": (counts[:, IN_PACKETS] + counts[:, OUT_PACKETS]).astype(np.float64),
    }
    first = rates.first_seen[rows].astype(np.int64)
    last = rates.last_seen[rows].astype(np.int64)
    members = np.ones(len(rows), dtype=np.int64)
    if options.by == "peer":
        # Texts only for the lines shown: 100 000 peers a second would cost the client more
        # than the rest of its work. Ties go by row: the order top first saw the peers in.
        order = _order(columns, np.arange(len(rows)), options.sort)[:limit]
        shown_rows = rows[order].tolist()
        texts = [labels.address(row) for row in shown_rows]
        names = [", ".join(rates.names.get(row, ())) for row in shown_rows]
        matching = len(rows)
    else:
        group_labels, inverse = labels.groups(rows, options.by)
        size = matching = len(group_labels)
        columns = {k: np.bincount(inverse, weights=v, minlength=size)
                   for k, v in columns.items()}
        members = np.bincount(inverse, minlength=size)
        grouped_first = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
        grouped_last = np.zeros(size, dtype=np.int64)
        np.minimum.at(grouped_first, inverse, first)
        np.maximum.at(grouped_last, inverse, last)
        first, last = grouped_first, grouped_last
        by_label = np.empty(size, dtype=np.int64)
        by_label[sorted(range(size), key=group_labels.__getitem__)] = np.arange(size)
        order = _order(columns, by_label, options.sort)[:limit]
        texts = [group_labels[at] for at in order.tolist()]
        names = [""] * len(order)
    shown = order
    lines = Lines(
        labels=texts, names=names,
        peers=np.asarray(members, dtype=np.int64)[shown],
        rates=np.stack([columns["rate0"][shown], columns["rate1"][shown],
                        columns["rate2"][shown]], axis=1).reshape(-1, 3),
        in_rate=columns["in"][shown], out_rate=columns["out"][shown],
        packet_rate=columns["pps"][shown], bytes=columns["bytes"][shown],
        packets=columns["packets"][shown], first_seen=first[shown], last_seen=last[shown])
    windows = [totals.over(w)[0] for w in rates.windows]
    matched = tuple(float(w[1]) if len(w) > 1 else 0.0 for w in windows)
    spans = rates.spans()
    return View(header=header, options=options,
                frame_rate=float(windows[RATE_WINDOW][0]) if len(windows[RATE_WINDOW]) else 0.0,
                byte_rates=(matched[0], matched[1], matched[2]),
                counters=counters(header, totals), lines=lines, matching=matching,
                spans=(spans[0], spans[1], spans[2]), note=note, now=now)


def _order(columns: dict[str, npt.NDArray[np.float64]], rank: npt.NDArray[np.int64],
           sort: Sort) -> npt.NDArray[np.intp]:
    """Positions, highest first by sort; ties by the next columns, then by rank."""
    keys = {"rate": ("rate1", "rate0", "rate2", "bytes"),
            "total": ("bytes", "packets", "rate1"),
            "packets": ("pps", "rate1", "packets")}[sort]
    # lexsort's last key is the primary one; negated for highest first.
    order: npt.NDArray[np.intp] = np.lexsort(
        (rank, *(-columns[k] for k in reversed(keys))))
    return order
