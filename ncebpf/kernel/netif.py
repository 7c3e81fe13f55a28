"""What ncebpf needs to know about an interface: its index and its addresses."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

from ncebpf.errors import InterfaceNotFound
from ncebpf.filter.pcap import PCAP_NETMASK_UNKNOWN


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceNotFound(ifname) from None


def _addresses(ifname: str) -> list[tuple[str, int]]:
    ifindex = ifindex_of(ifname)
    with IPRoute() as ipr:
        # IFA_LOCAL is this end of a point-to-point link; IFA_ADDRESS is the far end there.
        return [(msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
                for msg in ipr.get_addr(index=ifindex)]


def interface_addresses(ifname: str) -> list[str]:
    """IPv4 and IPv6 addresses configured on ifname, as text."""
    return [address for address, _ in _addresses(ifname)]


def ipv4_netmask(ifname: str) -> int:
    """The first IPv4 netmask of ifname as libpcap wants it, for `ip broadcast`."""
    for address, prefixlen in _addresses(ifname):
        if ipaddress.ip_address(address).version == 4:
            return int(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)
    return PCAP_NETMASK_UNKNOWN
