"""What `ncebpf top` shows, as one value: the rates grouped, filtered and sorted. Pure.

Rows are peers, or groups of peers cut by the reports' own rule
(ncebpf.report.aggregate.group_of: prefixes, registrable domains). A
group's rates and counts are its members' sums, its first seen the
earliest, its last seen the latest. The filter keeps the peers whose
address or a name holds the text (case-insensitive), before grouping.
"""

from __future__ import annotations

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
    lines: tuple[Line, ...]
    matching: int  # lines that pass the filter, shown or not
    spans: tuple[float, float, float]  # seconds each window covers so far
    note: str = ""
    now: float = 0.0  # epoch seconds the view was made (ages are against it)


class Labels:
    """Address texts and group keys of a PeerRates's rows, made once per row (and again
    when the row's names change)."""

    def __init__(self, rates: PeerRates) -> None:
        self._rates = rates
        self._text: dict[int, tuple[bytes, str]] = {}
        self._groups: dict[tuple[int, str], tuple[bytes, tuple[str, ...], str]] = {}

    def address(self, row: int) -> str:
        key = self._rates.index.keys[row].tobytes()
        known = self._text.get(row)
        if known is None or known[0] != key:  # a row of a key that left may be reused
            known = (key, peer_text(key))
            self._text[row] = known
        return known[1]

    def group(self, row: int, by: By) -> str:
        """The label of the group row's peer joins by `by`."""
        key = self._rates.index.keys[row].tobytes()
        names = tuple(self._rates.names.get(row, ()))
        known = self._groups.get((row, by))
        if known is None or known[0] != key or known[1] != names:
            _, label, _ = group_of(self.address(row), names, Options(by=by))
            known = (key, names, label)
            self._groups[(row, by)] = known
        return known[2]


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
        label_of = [labels.address(r) for r in rows.tolist()]
        names = [", ".join(rates.names.get(r, ())) for r in rows.tolist()]
    else:
        label_of, inverse = _groups([labels.group(r, options.by) for r in rows.tolist()])
        size = len(label_of)
        columns = {k: np.bincount(inverse, weights=v, minlength=size)
                   for k, v in columns.items()}
        members = np.bincount(inverse, minlength=size)
        grouped_first = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
        grouped_last = np.zeros(size, dtype=np.int64)
        np.minimum.at(grouped_first, inverse, first)
        np.maximum.at(grouped_last, inverse, last)
        first, last = grouped_first, grouped_last
        names = [""] * size
    lines = tuple(
        Line(label=label_of[at], names=names[at], peers=int(members[at]),
             rates=(float(columns["rate0"][at]), float(columns["rate1"][at]),
                    float(columns["rate2"][at])),
             in_rate=float(columns["in"][at]), out_rate=float(columns["out"][at]),
             packet_rate=float(columns["pps"][at]), bytes=int(columns["bytes"][at]),
             packets=int(columns["packets"][at]), first_seen=int(first[at]),
             last_seen=int(last[at]))
        for at in _order(columns, label_of, options.sort)[:limit].tolist())
    windows = [totals.over(w)[0] for w in rates.windows]
    matched = tuple(float(w[1]) if len(w) > 1 else 0.0 for w in windows)
    spans = rates.spans()
    return View(header=header, options=options,
                frame_rate=float(windows[RATE_WINDOW][0]) if len(windows[RATE_WINDOW]) else 0.0,
                byte_rates=(matched[0], matched[1], matched[2]),
                counters=counters(header, totals), lines=lines, matching=len(label_of),
                spans=(spans[0], spans[1], spans[2]), note=note, now=now)


def _groups(labels: list[str]) -> tuple[list[str], npt.NDArray[np.intp]]:
    """(each distinct label, each position's index among them)."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(label, len(index)) for label in labels),
                          dtype=np.intp, count=len(labels))
    return list(index), inverse


def _order(columns: dict[str, npt.NDArray[np.float64]], labels: list[str], sort: Sort
           ) -> npt.NDArray[np.intp]:
    """Positions, highest first by sort; ties by the next columns, then by label."""
    keys = {"rate": ("rate1", "rate0", "rate2", "bytes"),
            "total": ("bytes", "packets", "rate1"),
            "packets": ("pps", "rate1", "packets")}[sort]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[sorted(range(len(labels)), key=labels.__getitem__)] = np.arange(len(labels))
    # lexsort's last key is the primary one; negated for highest first.
    order: npt.NDArray[np.intp] = np.lexsort(
        (rank, *(-columns[k] for k in reversed(keys))))
    return order
