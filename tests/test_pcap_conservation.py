"""pcap mode keeps the conservation and reads VLAN tags as the kernel modes and tcpdump -r do.

The totals of a dump add up to the frames the interface saw (design §2): in
pcap mode the filter runs in user space on every captured frame, so the
frames it rejects are counted; where it cannot (a filter that reads socket
metadata, such as `inbound`), filtered_out is null with a reason, never 0.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pytest

from ncebpf.accounting import PeerTable, Totals
from ncebpf.dump import DumpContext, json_document
from ncebpf.filter.cbpf import socket_metadata
from ncebpf.filter.frames import ETH_P_ARP, arp_request, ethernet, ip_frame
from ncebpf.filter.pcap import compile_filter
from tests.netns import DaemonProcess, NetnsPair

NON_IP_ETHERTYPE = 0x88B5  # IEEE local experimental


def run_mode(pair: NetnsPair, workdir: Path, mode: str, expression: str,
             ingress: list[bytes], egress: list[bytes] | None = None) -> dict[str, Any]:
    """The dump after ncebpf in mode counted ingress and egress with expression."""
    run_dir = workdir / mode
    run_dir.mkdir()
    daemon = DaemonProcess(pair, run_dir, "--mode", mode, "--filter", expression)
    try:
        sent = pair.inject_ingress(ingress, run_dir)
        sent += pair.inject_egress(egress, run_dir) if egress else 0
        assert sent == len(ingress) + len(egress or [])
        time.sleep(0.3)  # let the last frames through the receive path
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert dump["mode"] == mode, daemon.stderr
    return dump


def seen(totals: dict[str, Any]) -> int:
    return int(totals["packets"] + totals["filtered_out"] + totals["unparsed"] +
               totals["overflow"] + totals["dropped"])


def peer_counts(dump: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {peer: (f["packets"], f["bytes"]) for peer, f in dump["peers"].items()}


def mixed_traffic(local: str) -> tuple[list[bytes], list[bytes]]:
    """TCP, UDP, ICMP, ARP and a non-IP EtherType, each a prime number of times."""
    ingress = (
        [ip_frame("10.77.9.1", local, "tcp", 20)] * 7
        + [ip_frame("fd77::9:1", "fd77::1", "tcp", 10)] * 3
        + [ip_frame("10.77.9.2", local, "udp", 30)] * 11
        + [ip_frame("10.77.9.3", local, "icmp", 40)] * 13
        + [ip_frame("fd77::9:2", "fd77::1", "udp")] * 2
        + [ethernet(arp_request(), ETH_P_ARP)] * 5
        + [ethernet(bytes(46), NON_IP_ETHERTYPE)] * 17
    )
    egress = ([ip_frame(local, "10.77.9.4", "tcp", 5)] * 2
              + [ip_frame(local, "10.77.9.5", "udp", 5)] * 3)
    return ingress, egress


@pytest.mark.privileged
@pytest.mark.parametrize("expression", ["tcp", "tcp or arp"])
def test_pcap_mode_counts_what_the_filter_rejects(silent_pair: NetnsPair, workdir: Path,
                                                  expression: str) -> None:
    pair = silent_pair
    ingress, egress = mixed_traffic(pair.local_v4)
    dumps = {mode: run_mode(pair, workdir, mode, expression, ingress, egress)
             for mode in ("xdp", "pcap")}
    rejected = 3 + 11 + 13 + 2 + 17 + (0 if "arp" in expression else 5)
    for mode, dump in dumps.items():
        totals = dump["totals"]
        assert seen(totals) == len(ingress) + len(egress), (mode, totals)
        assert totals["filtered_out"] == rejected, (mode, totals)
        assert totals["unparsed"] == (5 if "arp" in expression else 0), (mode, totals)
        assert totals["dropped"] == 0
    assert dumps["pcap"]["totals"] == dumps["xdp"]["totals"]
    assert peer_counts(dumps["pcap"]) == peer_counts(dumps["xdp"])
    assert set(dumps["pcap"]["peers"]) == {"10.77.9.1", "fd77::9:1", "10.77.9.4"}


def pcap_file(path: Path, frames: list[bytes]) -> None:
    """A classic pcap file (DLT_EN10MB) holding frames, for tcpdump -r."""
    records = b"".join(struct.pack("<IIII", 1, i, len(f), len(f)) + f
                       for i, f in enumerate(frames))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + records)


def tcpdump_count(pair: NetnsPair, path: Path, expression: str) -> int:
    out = pair.ns(pair.local, "tcpdump", "-nn", "-r", str(path), expression)
    return len(out.stdout.splitlines())


@pytest.mark.privileged
@pytest.mark.parametrize(("expression", "counted"), [
    ("host {local}", "10.77.8.2"),
    ("vlan and host {local}", "10.77.8.1"),
    ("vlan 10 and udp", "10.77.8.1"),
    ("vlan 20 and vlan 10 and udp", "10.77.8.3"),
])
def test_vlan_tags_are_in_the_bytes_the_filter_reads(silent_pair: NetnsPair, workdir: Path,
                                                     expression: str, counted: str) -> None:
    """A tagged frame is not `host X` in XDP or in tcpdump -r, so not in pcap mode either.

    The receiving kernel moves the outer tag into metadata before a capture
    socket sees the frame; libpcap puts it back (802.1ad too) before ncebpf does.
    """
    pair = silent_pair
    expression = expression.format(local=pair.local_v4)
    by_peer = {
        "10.77.8.1": [ip_frame("10.77.8.1", pair.local_v4, "udp", 30, vlans=(10,))] * 7,
        "10.77.8.2": [ip_frame("10.77.8.2", pair.local_v4, "udp", 30)] * 5,
        "10.77.8.3": [ip_frame("10.77.8.3", pair.local_v4, "udp", 30, vlans=(20, 10))] * 3,
    }
    ingress = [frame for frames in by_peer.values() for frame in frames]
    want = by_peer[counted]
    pcap_file(workdir / "frames.pcap", ingress)
    assert tcpdump_count(pair, workdir / "frames.pcap", expression) == len(want)
    for mode in ("xdp", "pcap"):
        dump = run_mode(pair, workdir, mode, expression, ingress)
        assert peer_counts(dump) == {counted: (len(want), sum(map(len, want)))}, mode
        assert dump["totals"]["filtered_out"] == len(ingress) - len(want), mode
        assert seen(dump["totals"]) == len(ingress), mode


@pytest.mark.privileged
def test_socket_metadata_filters_say_filtered_out_is_unknown(silent_pair: NetnsPair,
                                                             workdir: Path) -> None:
    """`inbound` runs in the capture socket, which does not say how many frames it rejected."""
    pair = silent_pair
    ingress = [ip_frame("10.77.6.1", pair.local_v4, "udp", 10)] * 5
    egress = [ip_frame(pair.local_v4, "10.77.7.1", "udp", 10)] * 4
    dump = run_mode(pair, workdir, "pcap", "inbound and udp", ingress, egress)
    totals = dump["totals"]
    assert totals["filtered_out"] is None
    assert "inbound/outbound" in totals["unknown"]["filtered_out"]
    assert all(isinstance(totals[k], int)
               for k in ("packets", "bytes", "unparsed", "overflow", "dropped"))
    assert set(dump["peers"]) <= {"10.77.6.1"}


def test_socket_metadata_names_what_the_filter_reads() -> None:
    assert socket_metadata(compile_filter("tcp or vlan 10")) is None
    assert socket_metadata(compile_filter("ip6 protochain 6")) is None
    assert socket_metadata(compile_filter("udp and inbound")) == \
        "the packet type (inbound/outbound)"
    assert socket_metadata(compile_filter("ifindex 3")) == "the interface index (ifindex)"


def test_an_unknown_total_is_null_with_its_reason() -> None:
    table = PeerTable(start=1000)
    table.totals = Totals(packets=3, bytes=300, unparsed=1,
                          unknown={"filtered_out": "the socket filter does not say"})
    table.reset(1100)
    table.totals = Totals(packets=5, bytes=500, unparsed=2,
                          unknown={"filtered_out": "the socket filter does not say"})
    totals = json_document(table, DumpContext("n", "eth1", "pcap"), 1200.0)["totals"]
    assert totals == {"packets": 2, "bytes": 200, "in_packets": 2, "in_bytes": 200,
                      "out_packets": 0, "out_bytes": 0, "filtered_out": None, "unparsed": 1,
                      "unattributed": 0, "overflow": 0, "dropped": 0,
                      "unknown": {"filtered_out": "the socket filter does not say"}}
