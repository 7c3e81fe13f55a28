"""The peer table every source (kernel maps, pcap) feeds, with the upstream rate math. Pure.

Peers are keyed by the kernel's struct peer_key (bpf/ncebpf_kern_user.h), so
a drain never formats addresses: 20 bytes, a family byte (4 or 6) and three
zero bytes, then the address (IPv4 as ::ffff:a.b.c.d). The family tells an
IPv4 peer from its IPv4-mapped IPv6 twin, and puts IPv4 first in key order.

Rates follow Net::Connection::Sniffer (spec §7) exactly when fed packet by
packet. ncebpf feeds them per drain instead: the packets a peer sent since
the previous drain arrive as one batch at the drain's time, so an interval
boundary falls on a drain boundary, up to --interval seconds from where the
upstream daemon would have put it. Times are whole epoch seconds, as
upstream.

The table is columnar (issue 13, item 4): one row per peer in numpy
arrays, found through ncebpf.peerindex, with no Python object per peer.
A drain updates a million rows with a few numpy operations; `peers` is a
read-only mapping view whose values (PeerRow) read their row on demand.
"""

from __future__ import annotations

import gc
import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from ncebpf.peerindex import KEY_SIZE as KEY_SIZE  # re-exported: the key's definition lives here
from ncebpf.peerindex import KeyIndex, Keys, Rows, key_array

IPV4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"
ZERO_80 = bytes(10)
IPV4_KEY_PREFIX = b"\x04\0\0\0" + IPV4_MAPPED_PREFIX  # the 16 bytes before an IPv4 address
IPV6_KEY_PREFIX = b"\x06\0\0\0"  # the 4 bytes before an IPv6 address
PEER_INTERVAL_S = 300  # a peer's rates update at most this often
GLOBAL_FIRST_INTERVAL_S = 300
GLOBAL_INTERVAL_S = 60
HOUR_S = 3600
PURGE_AGE_S = 86400  # a record whose E is more than a day old is dropped


def peer_key(address: str) -> bytes:
    """The KEY_SIZE-byte key of an IPv4 or IPv6 address given as text.

    ::ffff:a.b.c.d is an IPv6 address here, with a key of its own.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return IPV4_KEY_PREFIX + ip.packed
    return IPV6_KEY_PREFIX + ip.packed


def ipv4_key(address: bytes) -> bytes:
    """The key of a 4-byte IPv4 address as it is on the wire."""
    return IPV4_KEY_PREFIX + address


def ipv6_key(address: bytes) -> bytes:
    """The key of a 16-byte IPv6 address as it is on the wire."""
    return IPV6_KEY_PREFIX + address


def peer_text(key: bytes) -> str:
    """Address text of a key: IPv4 dotted-quad, IPv6 in RFC 5952 form.

    An IPv4-mapped IPv6 address comes out with the dotted tail RFC 5952 §5
    recommends (::ffff:10.77.0.3). inet_ntop(3) writes what the ipaddress
    module writes, five times faster (a dump formats a million of these),
    except for the rest of ::/80, where glibc prefers a dotted tail
    (::1.2.3.4) and ipaddress, rightly, does not: those go the slow way.
    """
    if key[0] == 4:
        return socket.inet_ntop(socket.AF_INET, key[16:])
    if key[4:14] == ZERO_80 and key[14:16] != b"\xff\xff":
        return str(ipaddress.IPv6Address(key[4:]))
    return socket.inet_ntop(socket.AF_INET6, key[4:])


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while up to a million acyclic objects are made.

    A drain's new records, a report's peers read from a dump: nothing made
    there forms a cycle, yet each generation-0 collection would rescan the
    growing table, which makes a first drain of many peers quadratic and
    costs a dump's reader a quarter of its time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class GlobalRates:
    """Hits and bytes per hour over all peers (spec §7.1)."""

    start: int
    rate: float = 0.0  # hits per hour
    bw: float = 0.0  # bytes per hour
    pending_hits: int = 0
    pending_bytes: int = 0
    last_update: int = 0
    next_update: int = 0

    def __post_init__(self) -> None:
        self.last_update = self.start
        self.next_update = self.start + GLOBAL_FIRST_INTERVAL_S

    def add(self, packets: int, nbytes: int, now: int) -> None:
        if now < self.next_update or (self.rate < 1 and self.pending_hits < 5):
            self.pending_hits += packets
            self.pending_bytes += nbytes
            return
        elapsed = max(1, now - self.start) if self.rate < 1 else HOUR_S + (now - self.last_update)
        self.rate = (self.rate + self.pending_hits) * HOUR_S / elapsed
        self.bw = (self.bw + self.pending_bytes) * HOUR_S / elapsed
        self.pending_hits, self.pending_bytes = packets, nbytes
        self.last_update, self.next_update = now, now + GLOBAL_INTERVAL_S

    @property
    def hits_per_minute(self) -> float:
        return self.rate / 60

    @property
    def bytes_per_second(self) -> float:
        return self.bw / HOUR_S


@dataclass
class Totals:
    """Every frame a source saw, by where it landed (design §2, conservation)."""

    packets: int = 0  # counted under a peer, both directions
    bytes: int = 0
    filtered_out: int = 0
    unparsed: int = 0  # frames that carry no IP (ARP, LLDP, PPPoE discovery, ...)
    # IP the parser cannot attribute to a peer: a truncated or bad IP header, more VLAN
    # tags or MPLS labels than it walks, an MPLS payload neither IPv4 nor IPv6.
    unattributed: int = 0
    overflow: int = 0  # the peer map was full; counted here, under no peer
    dropped: int = 0  # lost before counting: capture buffer overruns (pcap mode)
    # Counts the source cannot know, by field name, each with the reason; such a
    # field's number means nothing and the JSON dump writes it as null.
    unknown: dict[str, str] = field(default_factory=dict)
    out_packets: int = 0  # of packets/bytes: sent to the peer (the rest the peer sent)
    out_bytes: int = 0

    @property
    def in_packets(self) -> int:
        return self.packets - self.out_packets

    @property
    def in_bytes(self) -> int:
        return self.bytes - self.out_bytes

    @property
    def frames(self) -> int:
        """Frames seen, when no field it adds up is unknown."""
        return (self.packets + self.filtered_out + self.unparsed + self.unattributed
                + self.overflow)

    def since(self, base: Totals) -> Totals:
        return Totals(packets=self.packets - base.packets, bytes=self.bytes - base.bytes,
                      filtered_out=self.filtered_out - base.filtered_out,
                      unparsed=self.unparsed - base.unparsed,
                      unattributed=self.unattributed - base.unattributed,
                      overflow=self.overflow - base.overflow, dropped=self.dropped - base.dropped,
                      unknown=self.unknown, out_packets=self.out_packets - base.out_packets,
                      out_bytes=self.out_bytes - base.out_bytes)


@dataclass
class Others:
    """Peers no longer listed in the table, summed: evicted from the map to make room
    for new peers, or purged after a day without traffic. With them the peers add up
    to the totals: Σ peers' packets + others.packets = totals.packets."""

    peers: int = 0
    packets: int = 0
    bytes: int = 0



# Columns of PeerTable.counts and of a source's cumulative counters (design §2: in = the
# peer sent the frame to a local address, out = the peer is the destination).
IN_PACKETS, IN_BYTES, OUT_PACKETS, OUT_BYTES = range(4)
COUNT_FIELDS = ("in_packets", "in_bytes", "out_packets", "out_bytes")
Counts = npt.NDArray[np.uint64]  # (n, 4): in packets, in bytes, out packets, out bytes
NO_NAMES: Sequence[str] = ()


def packets_of(counts: Counts) -> npt.NDArray[np.uint64]:
    """Both directions' packets of (n, 4) counts."""
    total: npt.NDArray[np.uint64] = counts[:, IN_PACKETS] + counts[:, OUT_PACKETS]
    return total


def bytes_of(counts: Counts) -> npt.NDArray[np.uint64]:
    """Both directions' bytes of (n, 4) counts."""
    total: npt.NDArray[np.uint64] = counts[:, IN_BYTES] + counts[:, OUT_BYTES]
    return total


def _column(name: str, kind: type[int] | type[float]) -> property:
    """A PeerRow attribute that reads and writes its row of the table's column `name`."""
    def read(row: PeerRow) -> int | float:
        return kind(getattr(row._table, name)[row._row])

    def write(row: PeerRow, value: float) -> None:
        getattr(row._table, name)[row._row] = value

    return property(read, write)


class PeerRow:
    """One listed peer of a PeerTable, read from its columns when asked (a view, not a copy).

    The upstream fields (spec §7.2) B C E N R S T W, exact counts since S both
    ways (packets, bytes) and by direction (in_packets ... out_bytes), and the
    drain times at which the peer was first listed and its counters last moved
    (first_seen, last_seen). N and T are written by the resolver, the other
    upstream fields by the table (or a test that sets up a record). Valid
    while the peer stays listed.
    """

    __slots__ = ("_row", "_table")

    def __init__(self, table: PeerTable, row: int) -> None:
        self._table, self._row = table, row

    B = _column("B", int)
    C = _column("C", int)
    E = _column("E", int)
    R = _column("R", float)
    W = _column("W", float)
    T = _column("T", int)
    first_seen = _column("first_seen", int)
    last_seen = _column("last_seen", int)
    S = property(lambda self: self._table.start)
    in_packets = property(lambda self: int(self._table.counts[self._row, IN_PACKETS]))
    in_bytes = property(lambda self: int(self._table.counts[self._row, IN_BYTES]))
    out_packets = property(lambda self: int(self._table.counts[self._row, OUT_PACKETS]))
    out_bytes = property(lambda self: int(self._table.counts[self._row, OUT_BYTES]))

    @property
    def packets(self) -> int:
        return int(self._table.counts[self._row, IN_PACKETS]
                   + self._table.counts[self._row, OUT_PACKETS])

    @property
    def bytes(self) -> int:
        return int(self._table.counts[self._row, IN_BYTES]
                   + self._table.counts[self._row, OUT_BYTES])

    @property
    def N(self) -> Sequence[str]:  # noqa: N802 - upstream's field name
        return self._table.names.get(self._row, NO_NAMES)

    @N.setter
    def N(self, names: Sequence[str]) -> None:  # noqa: N802
        if names:
            self._table.names[self._row] = names
        else:
            self._table.names.pop(self._row, None)

    def __repr__(self) -> str:
        fields = ("B", "C", "E", "N", "R", "S", "T", "W", "packets", "bytes", *COUNT_FIELDS)
        return "PeerRow(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"


class PeerView(Mapping[bytes, PeerRow]):
    """The listed peers as a read-only mapping from key to PeerRow (what a dict of records was)."""

    def __init__(self, table: PeerTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return self._table.listed_count

    def __getitem__(self, key: bytes) -> PeerRow:
        row = self._table.row_of(key)
        if row < 0:
            raise KeyError(key)
        return PeerRow(self._table, row)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._table.row_of(key) >= 0

    def __iter__(self) -> Iterator[bytes]:
        table = self._table
        keys: list[bytes] = table.index.keys[table.listed_rows()].tolist()
        return iter(keys)


@dataclass(frozen=True)
class TableSnapshot:
    """What a dump reads, copied at one instant (PeerTable.snapshot): the header's figures
    and the listed peers in key order, position i in every column. Later drains, purges,
    resets and names change the table, never a snapshot, so a dump can be written from
    one while the table goes on counting (issue 13, item 4)."""

    start: int
    rates: GlobalRates
    others: Others
    totals: Totals
    keys: Keys  # (n,) V20, in key order
    B: npt.NDArray[np.uint64]  # noqa: N815 - upstream's field names
    C: npt.NDArray[np.uint64]  # noqa: N815
    E: npt.NDArray[np.uint32]  # noqa: N815
    R: npt.NDArray[np.float64]  # noqa: N815
    T: npt.NDArray[np.uint32]  # noqa: N815
    W: npt.NDArray[np.float64]  # noqa: N815
    counts: Counts
    names: dict[int, Sequence[str]]  # position -> names, where there are some
    ordered: bool = True  # in key order; else in row order (PeerTable.snapshot_unordered)

    def __len__(self) -> int:
        return len(self.keys)

    def in_key_order(self) -> TableSnapshot:
        """This snapshot with its peers in key order (IPv4 before IPv6, numeric: the bytes
        order of keys); itself when it already is. The sort of 1 M keys takes about 0.3 s,
        which is why the daemon leaves it to the thread that writes the dump."""
        if self.ordered:
            return self
        order = np.argsort(self.keys, kind="stable")
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        return replace(
            self, keys=self.keys[order], B=self.B[order], C=self.C[order], E=self.E[order],
            R=self.R[order], T=self.T[order], W=self.W[order], counts=self.counts[order],
            names={int(position[at]): names for at, names in self.names.items()},
            ordered=True)


class PeerTable:
    """The peers since the start or the last reset, in columns; the global rates; the totals.

    Rows come from a KeyIndex. A row may exist without being listed: the
    source's cumulative counters (`source`, the collector's memory of what it
    last read) outlive a reset or a purge, so that the next drain counts only
    what is new; such a row is listed again when its counters move. Columns
    have one entry per row the index has handed out (`index.high`); an
    unlisted or free row holds zeros. Epoch-second columns are uint32 (to 2106).
    """

    def __init__(self, start: int, track_created: bool = True) -> None:
        """track_created: keep new peers for take_created (the resolver's); without it
        take_created stays empty."""
        self.start = int(start)  # epoch seconds when collection (or the last reset) started
        self.track_created = track_created
        self.rates = GlobalRates(self.start)
        self.others = Others()  # retired peers, since the start or reset
        self.index = KeyIndex()
        self.names: dict[int, Sequence[str]] = {}  # row -> reverse-DNS names, when there are some
        self.listed_count = 0
        self._created: list[Rows] = []  # rows of new peers, for the name lookups
        self._source_totals = Totals()  # cumulative, as the source says
        self._totals_base = Totals()  # the source's totals at the reset
        self.listed = np.zeros(0, dtype=np.bool_)
        self.counts: Counts = np.zeros((0, 4), dtype=np.uint64)  # since the peer's S
        self.source: Counts = np.zeros((0, 4), dtype=np.uint64)  # the source's, last read
        self.B = np.zeros(0, dtype=np.uint64)  # bytes in the current interval
        self.C = np.zeros(0, dtype=np.uint64)  # packets ("hits") in the current interval
        self.R = np.zeros(0, dtype=np.float64)  # hits per hour
        self.W = np.zeros(0, dtype=np.float64)  # bytes per hour
        self.E = np.zeros(0, dtype=np.uint32)  # last rate update, or creation
        self.T = np.zeros(0, dtype=np.uint32)  # when to ask DNS again; 0 = never asked
        self.first_seen = np.zeros(0, dtype=np.uint32)  # drain time the peer was listed
        self.last_seen = np.zeros(0, dtype=np.uint32)  # drain time its counters last moved
        # Rows whose source entries a drain is deleting (Collector.drain): empty but during an
        # eviction, and in a checkpoint written just before one, which the next drain settles.
        self.evicting: Rows = np.zeros(0, dtype=np.int64)
        # Sinks of the drain that want every delta as it is counted (the history's bins):
        # called as observe(keys, deltas, now) with the rows' keys, (n, 4) deltas, epoch s.
        self.observers: list[Callable[[Keys, Counts, int], None]] = []

    _COLUMNS = ("listed", "counts", "source", "B", "C", "R", "W", "E", "T", "first_seen",
                "last_seen")

    @property
    def peers(self) -> PeerView:
        return PeerView(self)

    def _fit_columns(self) -> None:
        """Grow every column to the index's row capacity (untouched pages cost nothing)."""
        size = len(self.index.live)
        if len(self.listed) >= size:
            return
        for name in self._COLUMNS:
            old = getattr(self, name)
            grown = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            grown[:len(old)] = old
            setattr(self, name, grown)

    def rows_of(self, keys: Keys, now: int) -> Rows:
        """The rows of these distinct keys, made (unlisted, last seen now) where missing."""
        rows, new = self.index.rows(keys, add=True)
        self._fit_columns()
        self.last_seen[rows[new]] = now
        return rows

    def row_of(self, key: bytes) -> int:
        """The row of a listed peer, or -1."""
        if len(key) != KEY_SIZE:
            return -1
        row = self.index.row(key)
        return row if row >= 0 and self.listed[row] else -1

    def listed_among(self, keys: Sequence[bytes]) -> list[bool]:
        """Whether each key is a listed peer: `key in peers` for many keys in one pass."""
        if not keys:
            return []
        rows, _ = self.index.rows(key_array(b"".join(keys)), add=False)
        found = rows >= 0
        found[found] = self.listed[rows[found]]
        listed: list[bool] = found.tolist()
        return listed

    def names_of(self, keys: Keys) -> dict[int, Sequence[str]]:
        """The names of those of these distinct keys that have some, by position."""
        if not self.names or not len(keys):
            return {}
        rows, _ = self.index.rows(keys, add=False)
        named = {}
        for at, row in enumerate(rows.tolist()):
            names = self.names.get(row)
            if names:
                named[at] = names
        return named

    def listed_rows(self) -> Rows:
        return np.flatnonzero(self.listed[:self.index.high])

    def snapshot(self) -> TableSnapshot:
        """A copy of what a dump reads (about 100 B a listed peer), taken now, in key order."""
        return self.snapshot_unordered().in_key_order()

    def snapshot_unordered(self) -> TableSnapshot:
        """The cheap half of snapshot(), for the loop: copies of the listed rows' columns in
        row order (about 50 ms at 1 M peers); in_key_order() finishes it, off the loop."""
        rows = self.listed_rows()
        names: dict[int, Sequence[str]] = {}
        if self.names:  # only listed rows have names (_unlist drops them)
            named = np.fromiter(self.names, dtype=np.int64, count=len(self.names))
            at = np.searchsorted(rows, named).tolist()
            names = dict(zip(at, self.names.values(), strict=True))
        return TableSnapshot(
            start=self.start, rates=replace(self.rates), others=replace(self.others),
            totals=self.totals, keys=self.index.keys[rows], B=self.B[rows], C=self.C[rows],
            E=self.E[rows], R=self.R[rows], T=self.T[rows], W=self.W[rows],
            counts=self.counts[rows], names=names, ordered=False)

    def count(self, rows: Rows, deltas: Counts, now: int, created: int | None = None) -> None:
        """Add deltas (n, 4) to these distinct rows at epoch second now: upstream's per-peer
        update (spec §7.2), one per row, vectorized. An unlisted row becomes a new record,
        created at `created` (default now); the global rates are the caller's. The
        observers see the deltas first."""
        if self.observers and len(rows):
            keys = self.index.keys[rows]
            for observe in self.observers:
                observe(keys, deltas, now)
        self.last_seen[rows] = now
        listed = self.listed[rows]
        self._create(rows[~listed], deltas[~listed], now if created is None else created)
        rows, deltas = rows[listed], deltas[listed]
        if not len(rows):
            return
        self.counts[rows] += deltas
        packets, nbytes = packets_of(deltas), bytes_of(deltas)
        E = self.E[rows].astype(np.int64)  # noqa: N806 - upstream's field name
        C = self.C[rows]  # noqa: N806
        within = (now < E + PEER_INTERVAL_S) | ((E == self.start) & (C < 5))
        same = rows[within]
        self.B[same] += nbytes[within]
        self.C[same] += packets[within]
        roll, rolled = rows[~within], E[~within]
        elapsed = np.where(rolled == self.start, now - self.start,
                           HOUR_S + (now - rolled)).astype(np.float64)
        # The same float operations in the same order as upstream's Perl (and
        # PeerRecord before the columns): (R + C) * 3600 / elapsed.
        self.R[roll] = (self.R[roll] + self.C[roll].astype(np.float64)) * HOUR_S / elapsed
        self.W[roll] = (self.W[roll] + self.B[roll].astype(np.float64)) * HOUR_S / elapsed
        self.E[roll] = now
        self.B[roll] = nbytes[~within]
        self.C[roll] = packets[~within]

    def _create(self, rows: Rows, deltas: Counts, created: int) -> None:
        if not len(rows):
            return
        self.listed[rows] = True
        self.listed_count += len(rows)
        self.counts[rows] = deltas
        self.B[rows] = bytes_of(deltas)
        self.C[rows] = packets_of(deltas)
        self.R[rows] = self.W[rows] = 0.0
        self.E[rows] = created
        self.T[rows] = 0
        self.first_seen[rows] = created
        if self.track_created:
            self._created.append(rows.astype(np.int32))

    def add(self, key: bytes, packets: int, nbytes: int, first_seen: float, last_seen: float,
            out_packets: int = 0, out_bytes: int = 0) -> None:
        """Count one peer's frames between first_seen and last_seen: packets/nbytes it sent
        to us (in), out_packets/out_bytes we sent to it. Feeds the global rates too."""
        self.rates.add(packets + out_packets, nbytes + out_bytes, int(last_seen))
        self.add_peer(key, packets, nbytes, first_seen, last_seen, out_packets, out_bytes)

    def add_peer(self, key: bytes, packets: int, nbytes: int, first_seen: float,
                 last_seen: float, out_packets: int = 0, out_bytes: int = 0) -> None:
        """Like add, leaving the global rates to the caller. A new peer is created at
        first_seen, an existing one updated at last_seen (whole seconds)."""
        rows = self.rows_of(key_array(key), int(last_seen))
        deltas = np.array([[packets, nbytes, out_packets, out_bytes]], dtype=np.uint64)
        self.count(rows, deltas, int(last_seen), created=int(first_seen))

    @property
    def totals(self) -> Totals:
        """Since the start or the last reset, like the peers."""
        return self._source_totals.since(self._totals_base)

    @totals.setter
    def totals(self, cumulative: Totals) -> None:
        self._source_totals = cumulative

    def take_created(self) -> list[bytes]:
        """Keys of the peers listed since the previous call and still listed (for the name
        lookups). Kept as rows: 4 B a peer, not a bytes object."""
        created, self._created = self._created, []
        if not created:
            return []
        rows = np.concatenate(created)
        keys: list[bytes] = self.index.keys[rows[self.listed[rows]]].tolist()
        return keys

    def _fold_into_others(self, rows: Rows) -> int:
        """Add listed rows among these to `others` and unlist them; return how many."""
        rows = rows[self.listed[rows]]
        if len(rows):
            counts = self.counts[rows]
            self.others.peers += len(rows)
            self.others.packets += int(packets_of(counts).sum())
            self.others.bytes += int(bytes_of(counts).sum())
            self._unlist(rows)
        return len(rows)

    def _unlist(self, rows: Rows) -> None:
        self.listed[rows] = False
        self.listed_count -= len(rows)
        # A new peer's row, unlisted before its name was asked for, may go to another.
        self._created = [c[~np.isin(c, rows)] for c in self._created]
        for column in (self.counts, self.B, self.C, self.R, self.W, self.E, self.T,
                       self.first_seen):
            column[rows] = 0
        for row in rows.tolist() if self.names else ():
            self.names.pop(row, None)

    def retire_rows(self, rows: Rows) -> int:
        """Fold these rows into `others` and free them, source state and all; return how
        many were listed. For entries gone from the source (evicted)."""
        rows = np.unique(rows[rows >= 0])
        rows = rows[self.index.live[rows]]
        retired = self._fold_into_others(rows)
        self.source[rows] = 0
        self.last_seen[rows] = 0
        self.index.free(rows)
        return retired

    def retire(self, keys: Iterable[bytes]) -> int:
        """retire_rows by key: fold these peers into `others` and drop them; return how many
        were listed. The collector retires what it evicts from the map, so the table never
        holds more peers than the map can (--max-peers bounds both)."""
        joined = b"".join(keys)
        if not joined:
            return 0
        rows, _ = self.index.rows(key_array(joined), add=False)
        return self.retire_rows(rows[rows >= 0])

    def purge(self, now: int) -> int:
        """Retire records whose E is more than a day old (spec §9); return how many went.

        The source's counters stay remembered: a purged peer that sends again is
        listed anew with what it sent since."""
        rows = self.listed_rows()
        return self._fold_into_others(rows[self.E[rows].astype(np.int64) + PURGE_AGE_S < now])

    def reset(self, now: int) -> None:
        """Start over (HUP): no peers, rates from zero, totals counted from here."""
        self._unlist(self.listed_rows())
        self.names.clear()
        self._created.clear()
        self.others = Others()
        self.start = int(now)
        self.rates = GlobalRates(self.start)
        self._totals_base = self._source_totals
