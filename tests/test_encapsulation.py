"""Frames on the links real networks have, counted as tcpdump counts them, in every mode.

PPPoE sessions, MPLS label stacks and several VLAN tags are attributed to
their IP peer; what still cannot be attributed is counted apart from the
frames that carry no IP at all (issue 10, item 4).
"""

from __future__ import annotations

import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ncebpf.accounting import peer_key
from ncebpf.filter.frames import (
    ETH_P_ARP,
    ETH_P_IP,
    IPPROTO_UDP,
    arp_request,
    ethernet,
    ipv4,
    ipv6,
    udp,
)
from ncebpf.filter.pcap import (
    DLT_EN10MB,
    DLT_RAW,
    FilterSyntaxError,
    compile_filter,
    pcap_verdict,
)
from ncebpf.kernel.netif import link_dlt
from ncebpf.packet import NOT_IP, UNATTRIBUTED, addresses, ip_addresses
from tests.netns import TESTS, DaemonProcess, NetnsPair
from tests.test_pcap_conservation import run_mode

LOCAL4, LOCAL6 = NetnsPair.local_v4, NetnsPair.local_v6
ETH_P_PPP_SES, ETH_P_MPLS = 0x8864, 0x8847
PPP_IP, PPP_IPV6, PPP_LCP = 0x0021, 0x0057, 0xC021


def pppoe(protocol: int, payload: bytes, session: int = 0x1234) -> bytes:
    """A PPPoE session frame (RFC 2516) carrying payload under PPP protocol."""
    body = struct.pack("!H", protocol) + payload
    return ethernet(struct.pack("!BBHH", 0x11, 0, session, len(body)) + body, ETH_P_PPP_SES)


def mpls(labels: tuple[int, ...], payload: bytes) -> bytes:
    """An MPLS frame: labels outermost first, the last one bottom of stack."""
    stack = b"".join(struct.pack("!I", label << 12 | (i == len(labels) - 1) << 8 | 64)
                     for i, label in enumerate(labels))
    return ethernet(stack + payload, ETH_P_MPLS)


def tagged(vids: tuple[int, ...], payload: bytes, ethertype: int = ETH_P_IP) -> bytes:
    """A frame behind len(vids) 802.1Q tags, outermost first."""
    frame = ethernet(payload, ethertype)
    tags = b"".join(struct.pack("!HH", 0x8100, vid) for vid in vids)
    return frame[:12] + tags + frame[12:]


def v4_udp(src: str, size: int) -> bytes:
    return ipv4(src, LOCAL4, IPPROTO_UDP, udp(bytes(size)))


def v6_udp(src: str, size: int) -> bytes:
    return ipv6(src, LOCAL6, IPPROTO_UDP, udp(bytes(size)))


@dataclass(frozen=True)
class Group:
    """count copies of frame, which lands under peer, or in the totals slot named."""

    frame: bytes
    count: int
    peer: str | None = None
    slot: str = ""


# The issue's cases (10 frames each: PPPoE 150 B, MPLS 146 B, three tags 154 B), and
# their neighbours: IPv6 inside, the most tags walked, and what cannot be attributed.
GROUPS = (
    Group(pppoe(PPP_IP, v4_udp("10.77.3.1", 100)), 10, "10.77.3.1"),
    Group(pppoe(PPP_IPV6, v6_udp("fd77::3:2", 20)), 3, "fd77::3:2"),
    Group(pppoe(PPP_LCP, bytes(10)), 2, slot="unparsed"),
    Group(mpls((100,), v4_udp("10.77.3.3", 100)), 10, "10.77.3.3"),
    Group(mpls((100, 200, 300), v4_udp("10.77.3.10", 10)), 3, "10.77.3.10"),
    Group(mpls((300,), v6_udp("fd77::3:4", 8)), 5, "fd77::3:4"),
    Group(mpls((300,), bytes(4) + bytes(60)), 3, slot="unattributed"),  # a pseudowire
    Group(mpls(tuple(range(16, 25)), v4_udp("10.77.3.9", 8)), 2, slot="unattributed"),
    Group(tagged((10, 20, 30), v4_udp("10.77.3.5", 100)), 10, "10.77.3.5"),
    Group(tagged(tuple(range(1, 9)), v4_udp("10.77.3.6", 4)), 7, "10.77.3.6"),
    Group(tagged(tuple(range(1, 10)), v4_udp("10.77.3.7", 4)), 2, slot="unattributed"),
    Group(ethernet(v4_udp("10.77.3.8", 0)[:12], ETH_P_IP), 2, slot="unattributed"),
    Group(ethernet(arp_request(), ETH_P_ARP), 5, slot="unparsed"),
)
FILTERS = ("", "pppoes and udp", "mpls and udp", "vlan and vlan and vlan and udp")


def test_the_issue_frames_have_the_issue_sizes() -> None:
    sizes = {g.peer: len(g.frame) for g in GROUPS if g.peer}
    assert (sizes["10.77.3.1"], sizes["10.77.3.3"], sizes["10.77.3.5"]) == (150, 146, 154)


def test_the_parser_attributes_every_encapsulation() -> None:
    for group in GROUPS:
        found = addresses(group.frame)
        if group.peer is None:
            assert found is (NOT_IP if group.slot == "unparsed" else UNATTRIBUTED), group
        else:
            assert found == (peer_key(group.peer), peer_key(LOCAL4 if "." in group.peer
                                                             else LOCAL6)), group


def expected(expression: str) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Peers and totals as libpcap's verdict (what tcpdump counts) and the groups say."""
    insns = compile_filter(expression) if expression else ()
    peers: dict[str, tuple[int, int]] = {}
    totals = {"packets": 0, "bytes": 0, "filtered_out": 0, "unparsed": 0, "unattributed": 0}
    for group in GROUPS:
        if insns and not pcap_verdict(insns, group.frame):
            totals["filtered_out"] += group.count
        elif group.peer is None:
            totals[group.slot] += group.count
        else:
            peers[group.peer] = (group.count, group.count * len(group.frame))
            totals["packets"] += group.count
            totals["bytes"] += group.count * len(group.frame)
    return peers, totals


def test_tcpdump_counts_the_issue_figures() -> None:
    def size(peer: str) -> int:
        return next(len(g.frame) for g in GROUPS if g.peer == peer)

    assert expected("pppoes and udp")[0] == {"10.77.3.1": (10, 1500),
                                             "fd77::3:2": (3, 3 * size("fd77::3:2"))}
    assert expected("mpls and udp")[0] == {"10.77.3.3": (10, 1460),
                                           "fd77::3:4": (5, 5 * size("fd77::3:4"))}
    # Exactly three tags: libpcap reads the IP header after the third.
    assert expected("vlan and vlan and vlan and udp")[0] == {"10.77.3.5": (10, 1540)}


def peer_counts(dump: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {peer: (f["packets"], f["bytes"]) for peer, f in dump["peers"].items()}


@pytest.mark.privileged
@pytest.mark.parametrize("expression", FILTERS)
def test_encapsulated_ip_counts_as_tcpdump_in_every_mode(silent_pair: NetnsPair, workdir: Path,
                                                         expression: str) -> None:
    frames = [g.frame for g in GROUPS for _ in range(g.count)]
    want_peers, want_totals = expected(expression)
    for mode in ("xdp", "tc", "pcap"):
        dump = run_mode(silent_pair, workdir, mode, expression, frames)
        totals = {k: dump["totals"][k] for k in want_totals}
        assert (mode, peer_counts(dump), totals) == (mode, want_peers, want_totals)
        assert dump["totals"]["overflow"] == dump["totals"]["dropped"] == 0


# Item 1: a VLAN tag kept in metadata. The sending side's TC egress moves tag 10 into
# skb metadata (tests/vlan_offload.py); the receiver gets 142-byte frames with the tag
# beside them, 146 bytes on the wire, where libpcap and tcpdump count 146 and see `vlan 10`.
OFFLOADED = 10
OFFLOADED_FRAME = ethernet(v4_udp("10.77.4.1", 100), ETH_P_IP)


@pytest.mark.privileged
@pytest.mark.parametrize(("expression", "wire_view"), [
    ("", True), ("vlan 10", True), ("vlan 10 and udp and src 10.77.4.1", True),
    ("udp", False), ("vlan 11", False)])
def test_a_vlan_tag_in_metadata_counts_as_on_the_wire(silent_pair: NetnsPair, workdir: Path,
                                                      expression: str, wire_view: bool) -> None:
    pair = silent_pair
    assert len(OFFLOADED_FRAME) == 142
    pair.ns(pair.remote, sys.executable, str(TESTS / "vlan_offload.py"), pair.remote_if,
            str(OFFLOADED))
    frames = [OFFLOADED_FRAME] * 10
    on_the_wire = tagged((OFFLOADED,), OFFLOADED_FRAME[14:])
    matches = not expression or pcap_verdict(compile_filter(expression), on_the_wire) != 0
    assert matches == (expression != "vlan 11" and expression != "udp")  # libpcap's view
    for mode in ("tc", "pcap", "xdp"):
        dump = run_mode(pair, workdir, mode, expression, frames)
        counted = peer_counts(dump).get("10.77.4.1", (0, 0))
        if mode == "xdp" and wire_view:
            # XDP sees the frame as the driver hands it over, without the tag (README).
            want = (10, 1420) if not expression else (0, 0)
        elif mode == "xdp":
            want = (10, 1420) if expression == "udp" else (0, 0)
        else:
            want = (10, 1460) if matches else (0, 0)
        assert (mode, counted) == (mode, want)
        assert dump["totals"]["filtered_out"] == 10 - want[0], (mode, dump["totals"])


@pytest.mark.privileged
def test_xdp_says_at_start_that_it_cannot_see_a_stripped_tag(silent_pair: NetnsPair,
                                                              workdir: Path) -> None:
    daemon = DaemonProcess(silent_pair, workdir, "--mode", "xdp")
    assert daemon.stop() == 0
    assert "rx-vlan-offload on: XDP cannot read a VLAN tag" in daemon.stderr
    silent_pair.ns(silent_pair.local, "ethtool", "-K", silent_pair.local_if, "rxvlan", "off")
    daemon = DaemonProcess(silent_pair, workdir, "--mode", "xdp")
    assert daemon.stop() == 0
    assert "rx-vlan-offload" not in daemon.stderr


# Item 3: a link without an Ethernet header. Frames start at the IP header, the filter is
# compiled for raw IP (DLT_RAW) as tcpdump compiles it there, bytes are IP lengths.
TUN_LOCAL, TUN_PEER = "10.77.5.1", "10.77.5.2"
ICMP_IN, UDP_OUT = 20, 7  # 84 and 128 bytes


@pytest.fixture
def tun(silent_pair: NetnsPair) -> str:
    """A tun device in the pair's local namespace, TUN_LOCAL/24 on it, quiet (no IPv6)."""
    pair, name = silent_pair, silent_pair.local_if[:-1] + "t"
    pair.ns(pair.local, "ip", "tuntap", "add", "mode", "tun", "name", name)
    pair.ns(pair.local, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")
    pair.ns(pair.local, "ip", "addr", "add", f"{TUN_LOCAL}/24", "dev", name)
    pair.ns(pair.local, "ip", "link", "set", name, "up")
    return name


@pytest.mark.privileged
@pytest.mark.parametrize(("expression", "want"), [
    ("", (ICMP_IN + UDP_OUT, ICMP_IN * 84 + UDP_OUT * 128)),
    ("icmp", (ICMP_IN, ICMP_IN * 84)),
    ("udp and dst host 10.77.5.2", (UDP_OUT, UDP_OUT * 128)),
])
def test_a_tun_device_counts_from_the_ip_header(silent_pair: NetnsPair, tun: str, workdir: Path,
                                                expression: str,
                                                want: tuple[int, int]) -> None:
    pair = silent_pair
    for mode in ("xdp", "tc", "pcap"):
        run_dir = workdir / mode
        run_dir.mkdir()
        daemon = DaemonProcess(pair, run_dir, "--iface", tun, "--mode", mode,
                               "--filter", expression, with_iface=False)
        try:
            pair.ns(pair.local, sys.executable, str(TESTS / "tun_traffic.py"), tun,
                    str(ICMP_IN), str(UDP_OUT), TUN_PEER, TUN_LOCAL)
            # Outgoing frames reach a capture through the tun's queue: under load they can
            # arrive after the first dump is asked; a later dump has them.
            deadline = time.monotonic() + 5
            dump = daemon.dump()
            while peer_counts(dump) != {TUN_PEER: want} and time.monotonic() < deadline:
                time.sleep(0.2)
                dump = daemon.dump()
        finally:
            assert daemon.stop() == 0, daemon.stderr
        assert dump["mode"] == mode
        totals = dump["totals"]
        assert (mode, peer_counts(dump)) == (mode, {TUN_PEER: want})
        assert (mode, totals["filtered_out"], totals["unparsed"], totals["unattributed"]) == \
            (mode, ICMP_IN + UDP_OUT - want[0], 0, 0)


def test_raw_ip_links_compile_and_parse_from_the_ip_header() -> None:
    packet = v4_udp("10.77.5.2", 100)
    assert pcap_verdict(compile_filter("udp and src 10.77.5.2", dlt=DLT_RAW), packet)
    assert not pcap_verdict(compile_filter("udp and src 10.77.5.2"), packet)  # read as Ethernet
    assert ip_addresses(packet) == (peer_key("10.77.5.2"), peer_key(LOCAL4))
    assert ip_addresses(v6_udp("fd77::5:2", 1)) == (peer_key("fd77::5:2"), peer_key(LOCAL6))
    assert ip_addresses(packet[:19]) is UNATTRIBUTED
    assert ip_addresses(bytes(20)) is UNATTRIBUTED
    with pytest.raises(FilterSyntaxError):
        compile_filter("ether host 02:00:00:00:00:01", dlt=DLT_RAW)


def test_the_loopback_and_ethernet_links_keep_their_mac_header() -> None:
    assert link_dlt("lo") == DLT_EN10MB
