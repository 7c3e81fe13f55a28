"""Build Ethernet frames byte by byte, with exact lengths: for tests, explain and bench.

Checksums are left zero: ncebpf counts frames whatever their checksum, and
the receiving stacks in the tests drop these frames after the hooks saw them.
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

# A destination MAC no test host owns: receivers classify the frame as
# PACKET_OTHERHOST and drop it after XDP and TC have seen it, so the test
# traffic causes no replies that would muddle exact counts.
NOBODY_MAC = bytes.fromhex("020000000099")
SENDER_MAC = bytes.fromhex("020000000001")


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ethernet(payload: bytes, ethertype: int, vlans: tuple[int, ...] = (),
             dst: bytes = NOBODY_MAC, src: bytes = SENDER_MAC) -> bytes:
    """vlans: outermost first; the first of two is tagged 802.1ad (QinQ)."""
    header = dst + src
    for i, vid in enumerate(vlans):
        tpid = ETH_P_8021AD if len(vlans) == 2 and i == 0 else ETH_P_8021Q
        header += struct.pack("!HH", tpid, vid)
    return header + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, options: bytes = b"",
         fragment: int = 0) -> bytes:
    """fragment: the flags and offset field (0x2000 = more fragments; low 13 bits = offset)."""
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, fragment, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + options + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def udp(payload: bytes, sport: int = 40000, dport: int = 5353) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(payload: bytes = b"", sport: int = 40000, dport: int = 80, flags: int = 0x02) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload


def icmp_echo(payload: bytes = b"", v6: bool = False) -> bytes:
    return struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 1, 1) + payload


def arp_request() -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, SENDER_MAC,
                       bytes(4), bytes(6), bytes(4))


def ip_frame(src: str, dst: str, kind: str, size: int = 0, vlans: tuple[int, ...] = (),
             options: bytes = b"", sport: int = 40000, dport: int | None = None) -> bytes:
    """A frame from src to dst carrying kind (udp, tcp, icmp) with size payload bytes."""
    v6 = ipaddress.ip_address(src).version == 6
    payload = bytes(size)
    if kind == "udp":
        l4, proto = udp(payload, sport, 5353 if dport is None else dport), IPPROTO_UDP
    elif kind == "tcp":
        l4, proto = tcp(payload, sport, 80 if dport is None else dport), IPPROTO_TCP
    elif kind == "icmp":
        l4, proto = icmp_echo(payload, v6), IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP
    else:
        raise ValueError(kind)
    if v6:
        return ethernet(ipv6(src, dst, proto, l4), ETH_P_IPV6, vlans)
    return ethernet(ipv4(src, dst, proto, l4, options), ETH_P_IP, vlans)
