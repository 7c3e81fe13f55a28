"""Hypothesis strategies for Ethernet frames that exercise packet filters.

Addresses and ports come mostly from small pools that the expressions in
tests/filter_corpus.py name, so filters match often enough to matter; the
rest is random: IP options, fragments, IPv6 extension headers, VLAN tags,
unknown EtherTypes and protocols, truncation.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import strategies as st

from ncebpf.filter.frames import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
)

V4 = ["10.77.0.1", "10.77.0.2", "10.77.1.5", "192.0.2.1", "10.0.0.1", "127.0.0.1", "224.0.0.1",
      "255.255.255.255", "10.77.0.255"]
V6 = ["fd77::1", "fd77::2", "fe80::1", "ff02::1", "fd77:0:0:1::5", "::1"]
PORTS = [53, 80, 443, 22, 5353, 40000, 1500, 79, 9, 0, 65535, 5500]
MACS = ["020000000099", "020000000001", "ffffffffffff", "01005e000001", "333300000001"]
ETHERTYPES = [0x88B5, 0x8847, 0x8863, 0x8864, 0x0842, 0x8035]

mac = st.sampled_from(MACS).map(bytes.fromhex) | st.binary(min_size=6, max_size=6)
v4 = st.sampled_from(V4) | st.ip_addresses(v=4).map(str)
v6 = st.sampled_from(V6) | st.ip_addresses(v=6).map(str)
port = st.sampled_from(PORTS) | st.integers(0, 65535)
payload = st.binary(max_size=48)


@st.composite
def l4(draw: st.DrawFn, v6_family: bool) -> tuple[int, bytes]:
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "sctp", "other"]))
    data = draw(payload)
    if kind == "tcp":
        offset = draw(st.integers(5, 15))
        options = draw(st.binary(min_size=(offset - 5) * 4, max_size=(offset - 5) * 4))
        header = struct.pack("!HHIIBBHHH", draw(port), draw(port), draw(st.integers(0, 2**32 - 1)),
                             0, offset << 4, draw(st.integers(0, 255)), 65535, 0, 0)
        return 6, header + options + data
    if kind == "udp":
        return 17, struct.pack("!HHHH", draw(port), draw(port), 8 + len(data), 0) + data
    if kind == "icmp":
        icmp_type = draw(st.sampled_from([0, 3, 8, 11, 128, 129, 135]) | st.integers(0, 255))
        return (58 if v6_family else 1), struct.pack("!BBH", icmp_type, draw(st.integers(0, 3)),
                                                      0) + data
    if kind == "sctp":
        return 132, struct.pack("!HHII", draw(port), draw(port), 0, 0) + data
    return draw(st.integers(0, 255)), data


@st.composite
def ipv4_packet(draw: st.DrawFn) -> bytes:
    proto, body = draw(l4(False))
    ihl = draw(st.sampled_from([5, 5, 5, 6, 7, 15]))
    options = draw(st.binary(min_size=(ihl - 5) * 4, max_size=(ihl - 5) * 4))
    fragment = draw(st.sampled_from([0, 0, 0, 0x2000, 0x0001, 0x1FFF, 0x4000]))
    version_ihl = draw(st.sampled_from([0x40 | ihl, 0x40 | ihl, 0x40 | ihl, 0x60 | ihl]))
    total = draw(st.sampled_from([ihl * 4 + len(body), draw(st.integers(0, 65535))]))
    header = struct.pack("!BBHHHBBH4s4s", version_ihl, draw(st.integers(0, 255)), total,
                         1, fragment, draw(st.integers(0, 255)), proto, 0,
                         ipaddress.IPv4Address(draw(v4)).packed,
                         ipaddress.IPv4Address(draw(v4)).packed)
    return header + options + body


@st.composite
def ipv6_packet(draw: st.DrawFn) -> bytes:
    proto, body = draw(l4(True))
    for extension in draw(st.lists(st.sampled_from([0, 43, 44, 60]), max_size=2)):
        # next header, length in 8-byte units beyond the first 8
        body = struct.pack("!BB", proto, 0) + bytes(6) + body
        proto = extension
    header = struct.pack("!IHBB16s16s", draw(st.sampled_from([6 << 28, 4 << 28])), len(body),
                         proto, draw(st.integers(0, 255)),
                         ipaddress.IPv6Address(draw(v6)).packed,
                         ipaddress.IPv6Address(draw(v6)).packed)
    return header + body


@st.composite
def arp_packet(draw: st.DrawFn) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, draw(st.sampled_from([1, 2])),
                       draw(mac), ipaddress.IPv4Address(draw(v4)).packed, draw(mac),
                       ipaddress.IPv4Address(draw(v4)).packed)


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["ip", "ip", "ip6", "ip6", "arp", "other"]))
    if kind == "ip":
        ethertype, body = ETH_P_IP, draw(ipv4_packet())
    elif kind == "ip6":
        ethertype, body = ETH_P_IPV6, draw(ipv6_packet())
    elif kind == "arp":
        ethertype, body = ETH_P_ARP, draw(arp_packet())
    else:
        ethertype, body = draw(st.sampled_from(ETHERTYPES) | st.integers(0, 0xFFFF)), draw(payload)
    tags = b""
    vlans = draw(st.lists(st.sampled_from([10, 20, 100, 7]) | st.integers(0, 4095), max_size=2))
    for i, vid in enumerate(vlans):
        tpid = ETH_P_8021AD if len(vlans) == 2 and i == 0 else ETH_P_8021Q
        tags += struct.pack("!HH", tpid, vid | draw(st.sampled_from([0, 0x2000, 0xE000])))
    whole = draw(mac) + draw(mac) + tags + struct.pack("!H", ethertype) + body
    # XDP test runs take nothing shorter than an Ethernet header.
    cut = draw(st.sampled_from([len(whole)] * 6 + [draw(st.integers(14, max(14, len(whole))))]))
    return whole[:max(cut, 14)]
