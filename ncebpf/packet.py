"""Frame parsing for the pcap source: what bpf/parsing.h does, in Python. Pure.

Ethernet, up to MAX_TAGS VLAN tags (802.1Q, 802.1ad, 0x9100), then IPv4
(with options) or IPv6: directly, in a PPPoE session (PPP protocol 0x0021 /
0x0057), or under up to MAX_TAGS MPLS labels (the payload's version nibble
after the bottom of stack). On links without a MAC header the frame starts
at the IP header (`ip_addresses`). Addresses come back as peer keys
(accounting.peer_key: family, then address), as the kernel builds them; a frame that
gives none comes back as NOT_IP or UNATTRIBUTED, the kernel's two totals.
"""

from __future__ import annotations

import enum

from ncebpf.accounting import ipv4_key, ipv6_key

ETH_P_IP, ETH_P_IPV6 = b"\x08\x00", b"\x86\xdd"
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8", b"\x91\x00")
ETH_P_PPP_SES = b"\x88\x64"
MPLS_ETHERTYPES = (b"\x88\x47", b"\x88\x48")
PPP_IP, PPP_IPV6 = b"\x00\x21", b"\x00\x57"
PPPOE_HLEN = 8  # PPPoE session header (6) and PPP protocol (2)
MAX_TAGS = 8  # NCEBPF_MAX_TAGS: VLAN tags, and separately MPLS labels, walked per frame


class Unparsed(enum.Enum):
    """Why a frame names no peer; each is a slot of the totals."""

    NOT_IP = "unparsed"  # ARP, LLDP, PPPoE discovery, PPP control: no IP inside
    UNATTRIBUTED = "unattributed"  # IP that cannot be attributed (see bpf/parsing.h)


NOT_IP, UNATTRIBUTED = Unparsed.NOT_IP, Unparsed.UNATTRIBUTED
Parsed = tuple[bytes, bytes] | Unparsed


def _ipv4(frame: bytes, l3: int) -> Parsed:
    header = frame[l3:l3 + 20]
    if len(header) < 20 or header[0] >> 4 != 4 or header[0] & 0x0F < 5:
        return UNATTRIBUTED
    return ipv4_key(header[12:16]), ipv4_key(header[16:20])


def _ipv6(frame: bytes, l3: int) -> Parsed:
    header = frame[l3:l3 + 40]
    if len(header) < 40 or header[0] >> 4 != 6:
        return UNATTRIBUTED
    return ipv6_key(header[8:24]), ipv6_key(header[24:40])


def ip_addresses(frame: bytes, l3: int = 0) -> Parsed:
    """(source key, destination key) of the IP header at l3, told apart by its version."""
    if len(frame) <= l3:
        return UNATTRIBUTED
    version = frame[l3] >> 4
    if version == 4:
        return _ipv4(frame, l3)
    if version == 6:
        return _ipv6(frame, l3)
    return UNATTRIBUTED


def _mpls(frame: bytes, offset: int) -> Parsed:
    for _ in range(MAX_TAGS):
        entry = frame[offset:offset + 4]
        if len(entry) < 4:
            return UNATTRIBUTED
        offset += 4
        if entry[2] & 0x01:  # bottom of stack
            return ip_addresses(frame, offset)
    return UNATTRIBUTED


def _pppoe(frame: bytes, offset: int) -> Parsed:
    if len(frame) < offset + PPPOE_HLEN:
        return UNATTRIBUTED
    protocol = frame[offset + 6:offset + 8]
    if protocol == PPP_IP:
        return _ipv4(frame, offset + PPPOE_HLEN)
    if protocol == PPP_IPV6:
        return _ipv6(frame, offset + PPPOE_HLEN)
    return NOT_IP


def addresses(frame: bytes) -> Parsed:
    """(source key, destination key) of an Ethernet frame, or why there are none."""
    if len(frame) < 14:
        return NOT_IP
    offset = 12
    ethertype = frame[offset:offset + 2]
    if ethertype == ETH_P_IP:
        return _ipv4(frame, 14)
    for _ in range(MAX_TAGS):
        if ethertype not in VLAN_TPIDS:
            break
        if len(frame) < offset + 6:
            return UNATTRIBUTED
        offset += 4
        ethertype = frame[offset:offset + 2]
    l3 = offset + 2
    if ethertype == ETH_P_IP:
        return _ipv4(frame, l3)
    if ethertype == ETH_P_IPV6:
        return _ipv6(frame, l3)
    if ethertype == ETH_P_PPP_SES:
        return _pppoe(frame, l3)
    if ethertype in MPLS_ETHERTYPES:
        return _mpls(frame, l3)
    if ethertype in VLAN_TPIDS:
        return UNATTRIBUTED
    return NOT_IP
