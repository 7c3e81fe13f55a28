"""The peer table every source (kernel maps, pcap) feeds, with the upstream rate math. Pure.

Peers are keyed by the kernel's struct peer_key (bpf/ncebpf_kern_user.h), so
a drain never formats addresses: 20 bytes, a family byte (4 or 6) and three
zero bytes, then the address (IPv4 as ::ffff:a.b.c.d). The family tells an
IPv4 peer from its IPv4-mapped IPv6 twin, and puts IPv4 first in key order.

Rates follow Net::Connection::Sniffer (spec §7) exactly when fed packet by
packet. ncebpf feeds them per drain instead: the packets a peer sent since
the previous drain arrive as one batch at the time of the last of them, so
an interval boundary falls on a drain boundary, up to --interval seconds
from where the upstream daemon would have put it. Times are whole epoch
seconds, as upstream.
"""

from __future__ import annotations

import gc
import ipaddress
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

IPV4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"
ZERO_80 = bytes(10)
KEY_SIZE = 20  # sizeof(struct peer_key)
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


class PeerRecord:
    """One peer: the upstream fields (spec §7.2) and exact counts since creation."""

    __slots__ = ("B", "C", "E", "N", "R", "S", "T", "W", "packets", "bytes")

    def __init__(self, packets: int, nbytes: int, now: int, start: int) -> None:
        self.B: float = nbytes  # bytes in the current interval
        self.C = packets  # packets ("hits") in the current interval
        self.E = now  # last rate update, or creation
        self.N: Sequence[str] = ()  # reverse-DNS names; a shared empty tuple until there are some
        self.R = 0.0  # hits per hour
        self.S = start  # the collection start when the record was made
        self.T = 0  # when to ask DNS again; 0 = never asked
        self.W = 0.0  # bytes per hour
        self.packets = packets
        self.bytes = nbytes

    def add(self, packets: int, nbytes: int, now: int) -> None:
        self.packets += packets
        self.bytes += nbytes
        if now < self.E + PEER_INTERVAL_S or (self.E == self.S and self.C < 5):
            self.B += nbytes
            self.C += packets
            return
        elapsed = now - self.S if self.S == self.E else HOUR_S + (now - self.E)
        self.R = (self.R + self.C) * HOUR_S / elapsed
        self.W = (self.W + self.B) * HOUR_S / elapsed
        self.E, self.B, self.C = now, nbytes, packets

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"PeerRecord({fields})"


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

    packets: int = 0  # counted under a peer
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
                      unknown=self.unknown)


@dataclass
class Others:
    """Peers no longer listed in the table, summed: evicted from the map to make room
    for new peers, or purged after a day without traffic. With them the peers add up
    to the totals: Σ peers' packets + others.packets = totals.packets."""

    peers: int = 0
    packets: int = 0
    bytes: int = 0


@dataclass
class PeerTable:
    start: int  # epoch seconds when collection (or the last reset) started
    peers: dict[bytes, PeerRecord] = field(default_factory=dict)
    rates: GlobalRates = field(init=False)
    created: list[bytes] = field(default_factory=list)  # new peers, for the name lookups
    others: Others = field(default_factory=Others)  # retired peers, since the start or reset
    _source_totals: Totals = field(default_factory=Totals)  # cumulative, as the source says
    _totals_base: Totals = field(default_factory=Totals)  # the source's totals at the reset

    def __post_init__(self) -> None:
        self.rates = GlobalRates(self.start)

    def add(self, key: bytes, packets: int, nbytes: int, first_seen: float,
            last_seen: float) -> None:
        """Count packets a source saw for a peer between first_seen and last_seen."""
        self.rates.add(packets, nbytes, int(last_seen))
        self.add_peer(key, packets, nbytes, first_seen, last_seen)

    def add_peer(self, key: bytes, packets: int, nbytes: int, first_seen: float,
                 last_seen: float) -> None:
        """Like add, leaving the global rates to the caller (a drain feeds them once)."""
        now = int(last_seen)
        record = self.peers.get(key)
        if record is None:
            self.peers[key] = PeerRecord(packets, nbytes, int(first_seen), self.start)
            self.created.append(key)
        else:
            record.add(packets, nbytes, now)

    @property
    def totals(self) -> Totals:
        """Since the start or the last reset, like the peers."""
        return self._source_totals.since(self._totals_base)

    @totals.setter
    def totals(self, cumulative: Totals) -> None:
        self._source_totals = cumulative

    def take_created(self) -> list[bytes]:
        created, self.created = self.created, []
        return created

    def retire(self, keys: Iterable[bytes]) -> int:
        """Fold these peers into `others` and drop them; return how many were listed.

        The collector retires what it evicts from the map, so the table never holds
        more peers than the map can (--max-peers bounds both).
        """
        others, retired = self.others, 0
        for key in keys:
            record = self.peers.pop(key, None)
            if record is not None:
                others.peers += 1
                others.packets += record.packets
                others.bytes += record.bytes
                retired += 1
        return retired

    def purge(self, now: int) -> int:
        """Retire records whose E is more than a day old (spec §9); return how many went."""
        return self.retire([key for key, record in self.peers.items()
                            if record.E + PURGE_AGE_S < now])

    def reset(self, now: int) -> None:
        """Start over (HUP): no peers, rates from zero, totals counted from here."""
        self.peers.clear()
        self.created.clear()
        self.others = Others()
        self.start = now
        self.rates = GlobalRates(now)
        self._totals_base = self._source_totals
