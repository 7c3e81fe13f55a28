"""What ncebpf needs to know about an interface: index, link type, kind, upper devices,
addresses, offloads."""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    except (OSError, ValueError):  # ValueError: a NUL in the name
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


def ipv4_netmask(ifname: str) -> int:
    """The first IPv4 netmask of ifname as libpcap wants it, for `ip broadcast`."""
    for address, prefixlen in _addresses(ifname):
        if ipaddress.ip_address(address).version == 4:
            return int(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)
    return PCAP_NETMASK_UNKNOWN


IFF_LOOPBACK = 0x8

# Devices stacked on a lower one that they name in IFLA_LINK, and that the
# host's addresses can live on: the lower device carries their traffic.
STACKED_KINDS = frozenset({"vlan", "macvlan", "macvtap", "ipvlan", "ipvtap"})


@dataclass(frozen=True)
class Link:
    """One network device as rtnetlink describes it.

    kind is IFLA_INFO_KIND ("veth", "bridge", "bond", "vlan", "tun", ...),
    "" for a device a hardware driver registered; master is the bridge or
    bond it is a port of (IFLA_MASTER), lower the device a vlan or macvlan
    sits on (IFLA_LINK, only when it is in this namespace), 0 when none.
    """

    index: int
    name: str
    kind: str
    loopback: bool
    master: int
    lower: int


def _links() -> dict[int, Link]:
    with IPRoute() as ipr:
        found = {}
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
            # A veth names its peer in IFLA_LINK, often in another namespace.
            lower = 0 if msg.get_attr("IFLA_LINK_NETNSID") is not None else \
                msg.get_attr("IFLA_LINK") or 0
            found[msg["index"]] = Link(msg["index"], msg.get_attr("IFLA_IFNAME"), kind,
                                       bool(msg["flags"] & IFF_LOOPBACK),
                                       msg.get_attr("IFLA_MASTER") or 0,
                                       lower if lower != msg["index"] else 0)
        return found


def link_of(ifname: str) -> Link:
    """The device named ifname; InterfaceNotFound if there is none."""
    ifindex = ifindex_of(ifname)
    link = _links().get(ifindex)
    if link is None:
        raise InterfaceNotFound(ifname)
    return link


def upper_links(links: dict[int, Link], index: int) -> list[Link]:
    """The devices whose traffic passes through device `index`, nearest first.

    Its bridge or bond master and theirs, and the vlan/macvlan devices
    stacked on it or on them: the host's addresses for traffic on a bridge
    port or bond member live there. Pure: links as _links() returns them.
    """
    found: list[Link] = []
    todo, seen = [index], {index}
    while todo:
        current = links.get(todo.pop(0))
        if current is None:
            continue
        above = [links[current.master]] if current.master in links else []
        above += [link for link in links.values()
                  if link.lower == current.index and link.kind in STACKED_KINDS]
        for link in above:
            if link.index not in seen:
                seen.add(link.index)
                found.append(link)
                todo.append(link.index)
    return found


@dataclass(frozen=True)
class LocalSide:
    """The addresses this host owns for the traffic on one interface, and why these."""

    addresses: tuple[str, ...]
    reason: str


def choose_local_side(links: dict[int, Link], addresses: dict[int, list[str]],
                      index: int) -> LocalSide:
    """The local side of the peer rule (design §2) for traffic on device `index`.

    The device's own addresses and those of its upper devices (bridge,
    bond, vlan, macvlan; upper_links). On loopback, and where none of
    these has an address (a port of a bridge without one, a port of a
    switch ncebpf cannot see into), every address of this host: a frame
    there is this host's only if it is to or from one of them. Pure:
    addresses maps ifindex to its addresses as text.
    """
    link = links[index]
    host = tuple(dict.fromkeys(a for index_addresses in addresses.values()
                               for a in index_addresses))
    if link.loopback:
        return LocalSide(host, f"{link.name} is loopback: every address of this host")
    uppers = upper_links(links, index)
    owned = tuple(dict.fromkeys(a for i in (index, *(u.index for u in uppers))
                                for a in addresses.get(i, [])))
    names = ", ".join(u.name for u in uppers)
    if not owned:
        where = f" nor on {names} above it" if uppers else ""
        return LocalSide(host, f"no address on {link.name}{where}: every address of this host")
    if uppers:
        return LocalSide(owned, f"the addresses of {link.name} and of {names} above it")
    return LocalSide(owned, f"the addresses of {link.name}")


def local_side(ifname: str) -> LocalSide:
    """choose_local_side for the interface named ifname; InterfaceNotFound if it is gone."""
    index = ifindex_of(ifname)
    links = _links()
    if index not in links:
        raise InterfaceNotFound(ifname)
    addresses: dict[int, list[str]] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addresses.setdefault(msg["index"], []).append(
                msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"))
    return choose_local_side(links, addresses, index)


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
