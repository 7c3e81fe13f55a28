"""Frame parsing for the pcap source: what bpf/parsing.h does, in Python. Pure.

Ethernet, up to two VLAN tags (802.1Q, 802.1ad), IPv4 (with options) and
IPv6; anything else, or truncated headers, is not IP. Addresses come back as
peer keys (16 bytes, IPv4 as ::ffff:a.b.c.d), as the kernel builds them.
"""

from __future__ import annotations

from ncebpf.accounting import IPV4_MAPPED_PREFIX

ETH_P_IP, ETH_P_IPV6 = b"\x08\x00", b"\x86\xdd"
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")
MAX_VLAN_TAGS = 2


def addresses(frame: bytes) -> tuple[bytes, bytes] | None:
    """(source key, destination key), or None when the frame carries no IP header."""
    offset = 12
    ethertype = frame[offset:offset + 2]
    for _ in range(MAX_VLAN_TAGS):
        if ethertype not in VLAN_TPIDS:
            break
        offset += 4
        ethertype = frame[offset:offset + 2]
    l3 = offset + 2
    if ethertype == ETH_P_IP:
        header = frame[l3:l3 + 20]
        if len(header) < 20 or header[0] >> 4 != 4 or header[0] & 0x0F < 5:
            return None
        return IPV4_MAPPED_PREFIX + header[12:16], IPV4_MAPPED_PREFIX + header[16:20]
    if ethertype == ETH_P_IPV6:
        header = frame[l3:l3 + 40]
        if len(header) < 40 or header[0] >> 4 != 6:
            return None
        return header[8:24], header[24:40]
    return None
