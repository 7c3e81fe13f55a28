"""The in-memory peer table that every source (kernel maps, pcap) feeds. Pure: no I/O.

Peers are keyed by their 16-byte address (IPv4 as ::ffff:a.b.c.d), the same
key the kernel uses, so the hot path of a drain never formats addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPV4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def peer_key(address: str) -> bytes:
    """The 16-byte key of an IPv4 or IPv6 address given as text."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return IPV4_MAPPED_PREFIX + ip.packed
    return ip.packed


def peer_text(key: bytes) -> str:
    """Address text of a key: IPv4 dotted-quad, IPv6 in RFC 5952 form."""
    if key[:12] == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(key[12:]))
    return str(ipaddress.IPv6Address(key))


class PeerRecord:
    """What the table knows of one peer. Times are epoch seconds."""

    __slots__ = ("packets", "bytes", "first_seen", "last_seen")

    def __init__(self, packets: int, nbytes: int, first_seen: float, last_seen: float) -> None:
        self.packets = packets
        self.bytes = nbytes
        self.first_seen = first_seen
        self.last_seen = last_seen

    def __repr__(self) -> str:
        return (f"PeerRecord(packets={self.packets}, bytes={self.bytes}, "
                f"first_seen={self.first_seen}, last_seen={self.last_seen})")


@dataclass
class Totals:
    """Every frame a source saw, by where it landed (design §2, conservation)."""

    packets: int = 0  # counted under a peer
    bytes: int = 0
    filtered_out: int = 0
    unparsed: int = 0
    overflow: int = 0  # the peer map was full; counted here, under no peer

    @property
    def frames(self) -> int:
        return self.packets + self.filtered_out + self.unparsed + self.overflow


@dataclass
class PeerTable:
    start: float  # epoch seconds when collection started
    peers: dict[bytes, PeerRecord] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)

    def add(self, key: bytes, packets: int, nbytes: int, first_seen: float,
            last_seen: float) -> None:
        record = self.peers.get(key)
        if record is None:
            self.peers[key] = PeerRecord(packets, nbytes, first_seen, last_seen)
            return
        record.packets += packets
        record.bytes += nbytes
        if first_seen < record.first_seen:
            record.first_seen = first_seen
        if last_seen > record.last_seen:
            record.last_seen = last_seen
