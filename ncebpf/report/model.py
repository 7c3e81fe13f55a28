"""What reports read and what they produce: a dump read back, and its groups. Pure data.

A `Snapshot` is one dump, whatever its format (ncebpf's JSON, ncebpf's or
the Perl daemon's `.stats`): the header, the totals where the dump has
them, and the peers. A `Report` is a snapshot cut into `Group`s by
`aggregate.aggregate`, ordered and counted, ready for a renderer.

Units are the dump's (spec §7.2): R hits/hour, W bytes/hour, E epoch
seconds of the last rate update ("last contact" in upstream's reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

By = Literal["cidr", "domain", "peer"]
Sort = Literal["bandwidth", "hits", "peers", "last", "packets", "bytes"]
DomainRule = Literal["psl", "upstream"]
BY_CHOICES: tuple[By, ...] = ("cidr", "domain", "peer")
SORT_CHOICES: tuple[Sort, ...] = ("bandwidth", "hits", "peers", "last", "packets", "bytes")
DOMAIN_RULES: tuple[DomainRule, ...] = ("psl", "upstream")
# The dump's totals, in the order reports show them (README "Reading a dump").
# The JSON dump's per-direction counts (peers and totals), since issue 13: carried when present.
DIRECTION_FIELDS = ("in_packets", "in_bytes", "out_packets", "out_bytes")
TOTAL_FIELDS = ("packets", "bytes", "filtered_out", "unparsed", "unattributed", "overflow",
                "dropped")


class Peer(NamedTuple):
    """One peer of a dump: its address text and the upstream fields (spec §7.2).

    packets and bytes are the exact counts since the peer's S; None when the
    dump does not have them (an upstream `.stats` file). in_packets ...
    out_bytes split them by direction (in = the peer sent it); None in dumps
    from before issue 13 and in `.stats` files. A named tuple, not a
    frozen dataclass: a report reads 100 000 of these, and a tuple is made
    five times faster.
    """

    address: str
    B: float
    C: int
    E: int
    N: tuple[str, ...]
    R: float
    S: int
    T: int
    W: float
    packets: int | None = None
    bytes: int | None = None
    in_packets: int | None = None
    in_bytes: int | None = None
    out_packets: int | None = None
    out_bytes: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """One dump read back (README "Reading a dump"; spec §10 for `.stats`).

    header is the `.stats` header text exactly as read (spec §10.4), or
    that text rendered from a JSON dump, so the text report starts with it
    whatever the source. totals maps TOTAL_FIELDS to counts, a count to
    None when the source could not know it, and is empty for an upstream
    `.stats` file, which has none. others is the dump's `others` object
    (peers no longer listed, with their packets and bytes).
    """

    source: str  # where it came from: a path, or "instance NAME"
    start: int
    current: int
    hits_per_minute: int
    bytes_per_second: int
    users: int
    device: str
    promiscuous: bool
    filter: str
    header: str
    peers: tuple[Peer, ...]
    name: str | None = None
    mode: str | None = None  # None: an upstream dump, which does not say
    match: str | None = None
    nomatch: str | None = None
    payload: int | None = None
    snaplen: int | None = None
    totals: dict[str, int | None] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)  # why a total is None
    others: dict[str, int] = field(default_factory=dict)
    # A report over several sources (merge.merge): each source's dump without its peers
    # (users still counts them), in the order given, and the sources that gave none, as
    # (source, error text). Both empty for a single dump.
    parts: tuple[Snapshot, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def partial(self) -> bool:
        """Whether a source of this report failed: its peers are missing."""
        return bool(self.failures)


@dataclass(frozen=True)
class Options:
    """How to cut and order a report; the defaults are `ncebpf report`'s."""

    by: By = "cidr"
    cidr4: int = 24  # upstream's /24
    cidr6: int = 48
    domain_rule: DomainRule = "psl"
    sort: Sort = "bandwidth"
    top: int | None = None  # groups shown; None = all (totals always cover all)


@dataclass(frozen=True, slots=True)
class Group:
    """Peers reported together: a prefix, a domain, or one peer.

    key is what the peers share ("10.77.1.0/24", "example.co.uk", the
    address); label is how reports name it. soa is True for a domain taken
    from the SOA of an NXDOMAIN answer (names written `:mname`, spec §8.4):
    the peers have no name of their own. R, W are sums (hits/hour,
    bytes/hour), E the latest E; packets and bytes the exact sums, None
    when the dump lacks them. members are in numeric order.
    """

    key: str
    label: str
    R: float
    W: float
    E: int
    members: tuple[Peer, ...]
    packets: int | None
    bytes: int | None
    soa: bool = False


@dataclass(frozen=True)
class Totals:
    """Sums over every group of a report, shown or not."""

    groups: int
    peers: int
    R: float
    W: float
    packets: int | None
    bytes: int | None


@dataclass(frozen=True)
class TimeSeries:
    """Bytes per second over a report's range, point by point (a report from the history):
    starts are the points' epoch seconds, each `width` seconds long; total is every
    peer's, groups the busiest groups' (label, values), busiest first; left_out: busier
    groups not drawn, for having too many peers to read."""

    width: int
    starts: tuple[int, ...]
    total: tuple[float, ...]
    groups: tuple[tuple[str, tuple[float, ...]], ...]
    left_out: int = 0


@dataclass(frozen=True)
class Report:
    """A snapshot cut into groups: `groups` are the ones shown, in report order."""

    snapshot: Snapshot
    options: Options
    groups: tuple[Group, ...]
    totals: Totals
    over_time: TimeSeries | None = None
