"""What ncebpf needs to know about an interface: index, link type, addresses, offloads."""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute

from ncebpf.errors import InterfaceNotFound, UsageError
from ncebpf.filter.pcap import DLT_EN10MB, DLT_RAW, PCAP_NETMASK_UNKNOWN

# ARPHRD_* link types (linux/if_arp.h) whose frames start with an Ethernet header.
ETHERNET_LINKS = {1: "ether", 772: "loopback"}
# ... and those whose frames start at the IP header: no MAC header at XDP, TC or a packet
# socket (libpcap's DLT_RAW on tun and WireGuard).
IP_LINKS = {65534: "none (tun, WireGuard)", 519: "rawip", 512: "ppp", 768: "ipip",
            769: "ip6tnl", 776: "sit", 778: "gre", 823: "ip6gre"}


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceNotFound(ifname) from None


def link_dlt(ifname: str) -> int:
    """The libpcap link type ncebpf compiles filters for on ifname: DLT_EN10MB for Ethernet
    links, DLT_RAW for links whose frames start at the IP header (tcpdump's choice there).
    Raises UsageError for any other link type."""
    try:
        arphrd = int(Path(f"/sys/class/net/{ifname}/type").read_text())
    except (OSError, ValueError):
        raise InterfaceNotFound(ifname) from None
    if arphrd in ETHERNET_LINKS:
        return DLT_EN10MB
    if arphrd in IP_LINKS:
        return DLT_RAW
    raise UsageError(f"{ifname} has link type {arphrd} (see linux/if_arp.h): ncebpf counts "
                     "Ethernet interfaces and IP links without a MAC header (tun, WireGuard, "
                     "PPP, ipip, GRE) only")


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


def all_addresses() -> list[tuple[str, str, int]]:
    """(interface, address, prefix length) for every address of this host, in kernel order."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [(msg.get_attr("IFA_LABEL") or names.get(msg["index"], ""),
                 msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
                for msg in ipr.get_addr()]


SIOCETHTOOL = 0x8946
ETHTOOL_GFLAGS = 0x25
ETH_FLAG_RXVLAN = 1 << 8  # rx-vlan-offload: the driver moves the outer tag into metadata


def rx_vlan_offload(ifname: str) -> bool:
    """Whether ifname's driver strips received VLAN tags into metadata (ethtool's
    rx-vlan-offload, read through the legacy ETHTOOL_GFLAGS); False if it cannot say."""
    request = bytearray(struct.pack("II", ETHTOOL_GFLAGS, 0))
    buffer = ctypes.create_string_buffer(bytes(request), len(request))
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(buffer))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return False
    _, flags = struct.unpack("II", buffer.raw)
    return bool(flags & ETH_FLAG_RXVLAN)


SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1


@contextmanager
def promiscuous(ifname: str) -> Iterator[None]:
    """Promiscuous mode for as long as the block runs.

    A packet-socket membership rather than the interface flag: the kernel
    counts memberships and drops ours when the socket closes, however the
    process ends, so a crash cannot leave the interface promiscuous and
    another tool's promiscuity is left as it was.
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    try:
        request = struct.pack("iHH8s", ifindex_of(ifname), PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)
        yield
    finally:
        sock.close()
