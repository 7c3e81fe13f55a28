"""Exact per-peer counts through the real kernel path, in network namespaces."""

from __future__ import annotations

import ipaddress
import struct
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import (
    ETH_P_ARP,
    arp_request,
    ethernet,
    ip_frame,
)
from tests.netns import DaemonProcess, NetnsPair
from tests.tcp_stream import tcp_stream

pytestmark = pytest.mark.privileged

NON_IP_ETHERTYPE = 0x88B5  # IEEE local experimental


def frame_addresses(frame: bytes) -> tuple[str, str] | None:
    """(src, dst) of an IP frame, independently of ncebpf's parser; None if not IP."""
    offset, ethertype = 12, struct.unpack_from("!H", frame, 12)[0]
    while ethertype in (0x8100, 0x88A8):
        offset += 4
        ethertype = struct.unpack_from("!H", frame, offset)[0]
    l3 = frame[offset + 2:]
    if ethertype == 0x0800:
        return str(ipaddress.IPv4Address(l3[12:16])), str(ipaddress.IPv4Address(l3[16:20]))
    if ethertype == 0x86DD:
        return str(ipaddress.IPv6Address(l3[8:24])), str(ipaddress.IPv6Address(l3[24:40]))
    return None


def expected_counts(frames: list[bytes], local: set[str]) -> tuple[dict[str, list[int]], int]:
    """Per-peer [packets, bytes] by the design §2 peer rule, and the non-IP frame count."""
    peers: dict[str, list[int]] = {}
    unparsed = 0
    for frame in frames:
        addresses = frame_addresses(frame)
        if addresses is None:
            unparsed += 1
            continue
        src, dst = addresses
        peer = dst if src in local else src
        counts = peers.setdefault(peer, [0, 0])
        counts[0] += 1
        counts[1] += len(frame)
    return peers, unparsed


def assert_peers(dump: dict[str, Any], expected: dict[str, list[int]]) -> None:
    got = {peer: [dump["peers"][peer]["packets"], dump["peers"][peer]["bytes"]]
           for peer in expected if peer in dump["peers"]}
    assert got == expected


def ingress_mix(pair: NetnsPair) -> list[bytes]:
    local4, local6 = pair.local_v4, pair.local_v6
    frames: list[bytes] = []
    frames += [ip_frame("10.77.1.1", local4, "udp", 100)] * 7
    frames += [ip_frame("10.77.1.2", local4, "tcp")] * 11
    frames += [ip_frame("10.77.1.3", local4, "icmp", 56)] * 13
    frames += [ip_frame("10.77.1.4", local4, "udp", 10, options=bytes([1] * 8))] * 5
    frames += [ip_frame("10.77.1.5", local4, "udp", 30, vlans=(10,))] * 3
    frames += [ip_frame("10.77.1.6", local4, "tcp", 0, vlans=(100, 20))] * 2
    frames += [ip_frame("fd77:1::1", local6, "udp", 200)] * 17
    frames += [ip_frame("fd77:1::2", local6, "tcp", 12)] * 19
    frames += [ip_frame("fd77:1::3", local6, "icmp", 8)] * 23
    frames += [ip_frame("fd77:1::4", local6, "udp", 1, vlans=(7,))] * 2
    frames += [ip_frame(pair.remote_v4, local4, "udp", 100)] * 3
    frames += [ethernet(arp_request(), ETH_P_ARP)] * 4
    frames += [ethernet(bytes(46), NON_IP_ETHERTYPE)] * 3
    return frames


def egress_mix(pair: NetnsPair) -> list[bytes]:
    local4, local6 = pair.local_v4, pair.local_v6
    frames: list[bytes] = []
    frames += [ip_frame(local4, "10.77.2.1", "udp", 64)] * 7
    frames += [ip_frame(local4, "10.77.2.2", "tcp", 3)] * 5
    frames += [ip_frame(local4, "10.77.2.3", "icmp", 100, vlans=(42,))] * 2
    frames += [ip_frame(local4, "10.77.2.4", "udp", 5, options=bytes([1] * 4))] * 3
    frames += [ip_frame(local6, "fd77:2::1", "udp", 300)] * 11
    frames += [ip_frame(local6, "fd77:2::2", "icmp", 0)] * 3
    frames += [ip_frame(local6, "fd77:2::3", "tcp", 40)] * 5
    frames += [ip_frame(local4, pair.remote_v4, "udp", 20)] * 4
    frames += [ethernet(arp_request(), ETH_P_ARP)] * 2
    return frames


@pytest.mark.parametrize("xdp_mode", ["native", "generic"])
def test_exact_counts_both_directions(pair: NetnsPair, workdir: Path, xdp_mode: str) -> None:
    daemon = DaemonProcess(pair, workdir, "--xdp-mode", xdp_mode, "--interval", "0.2")
    try:
        assert f"xdp{'generic' if xdp_mode == 'generic' else ''} " in \
            pair.ns(pair.local, "ip", "-d", "link", "show", pair.local_if).stdout
        ingress, egress = ingress_mix(pair), egress_mix(pair)
        assert pair.inject_ingress(ingress, workdir) == len(ingress)
        assert pair.inject_egress(egress, workdir) == len(egress)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    expected, unparsed = expected_counts(ingress + egress, {pair.local_v4, pair.local_v6})
    assert_peers(dump, expected)
    assert dump["totals"]["unparsed"] == unparsed
    unexpected = {peer: record for peer, record in dump["peers"].items() if peer not in expected}
    assert dump["others"]["packets"] == 0, (dump["others"], unexpected)
    assert dump["totals"]["packets"] == sum(p["packets"] for p in dump["peers"].values()), \
        (dump["totals"], unexpected)
    assert dump["totals"]["bytes"] == sum(p["bytes"] for p in dump["peers"].values())
    assert dump["totals"]["overflow"] == 0
    # SIGTERM left nothing attached, and the final dump agrees with the live one.
    assert pair.xdp_attached() == ""
    assert pair.tc_egress_filters() == ""
    assert "clsact" not in pair.qdiscs()
    final = __import__("json").loads((workdir / "state" / "t.json").read_text())
    assert_peers(final, expected)


ECHO = """
import socket, sys
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"""


def udp_exchange(pair: NetnsPair, local: str, remote: str, count: int, size: int) -> None:
    client = (
        "import socket, sys\n"
        "family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
        "s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5)\n"
        "s.bind((sys.argv[2], 0))\n"
        f"for _ in range({count}):\n"
        f"    s.sendto(bytes({size}), (sys.argv[1], 7007)); s.recvfrom(65535)\n"
    )
    with pair.popen(pair.local, sys.executable, "-c", ECHO, local, str(count)) as echo:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        pair.ns(pair.remote, sys.executable, "-c", client, local, remote)
        assert echo.wait(timeout=10) == 0


def test_real_traffic_through_cli(pair: NetnsPair, workdir: Path) -> None:
    """The done-when check: real sockets, `ncebpf attach` + `ncebpf dump`, v4 and v6."""
    daemon = DaemonProcess(pair, workdir)
    try:
        udp_exchange(pair, pair.local_v4, pair.remote_v4, count=13, size=100)
        udp_exchange(pair, pair.local_v6, pair.remote_v6, count=17, size=200)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert_peers(dump, {
        pair.remote_v4: [2 * 13, 2 * 13 * (14 + 20 + 8 + 100)],
        pair.remote_v6: [2 * 17, 2 * 17 * (14 + 40 + 8 + 200)],
    })
    assert pair.xdp_attached() == "" and pair.tc_egress_filters() == ""


def test_conservation_under_load(quiet_pair: NetnsPair, workdir: Path) -> None:
    """≥ 100 kpps for ≥ 5 s while the collector drains: every frame lands exactly once."""
    pair = quiet_pair
    pattern = [ip_frame(f"10.77.{8 + i // 250}.{1 + i % 250}", pair.local_v4, "udp", i % 64)
               for i in range(500)]
    pattern += [ip_frame(f"fd77:9::{i:x}", pair.local_v6, "tcp", i % 32) for i in range(500)]
    pattern += [ethernet(bytes(46), NON_IP_ETHERTYPE)] * 24
    repeat, rate = 640, 120_000.0  # 655,360 frames in about 5.5 s
    daemon = DaemonProcess(pair, workdir, "--direction", "ingress", "--xdp-mode", "native",
                           "--interval", "0.1")
    dumps: list[dict[str, Any]] = []
    sending = threading.Event()
    sending.set()

    def dump_while_sending() -> None:
        while sending.is_set():
            dumps.append(daemon.dump())

    dumper = threading.Thread(target=dump_while_sending)
    try:
        dumper.start()
        sent = pair.inject_ingress(pattern, workdir, repeat=repeat, rate=rate)
        sending.clear()
        dumper.join()
        final = daemon.dump()
    finally:
        sending.clear()
        assert daemon.stop() == 0, daemon.stderr
    # inject_ingress sends again what the veth's XDP ring refused (a receiver too
    # slow for the rate), so every frame reached XDP exactly once.
    assert sent == repeat * len(pattern)
    totals = final["totals"]
    assert totals["packets"] + totals["unparsed"] + totals["filtered_out"] + \
        totals["overflow"] == sent
    expected, unparsed = expected_counts(pattern, {pair.local_v4, pair.local_v6})
    expected = {peer: [n * repeat for n in counts] for peer, counts in expected.items()}
    assert totals["unparsed"] == unparsed * repeat
    assert_peers(final, expected)
    assert len(final["peers"]) == len(expected)
    assert len(dumps) >= 2, "the dump loop should have run during the load"
    # Counts only grow from one dump to the next: nothing counted twice, then taken back.
    series = [d["totals"]["packets"] for d in dumps] + [totals["packets"]]
    assert series == sorted(series)


def test_map_full_counts_overflow(quiet_pair: NetnsPair, workdir: Path) -> None:
    pair = quiet_pair
    frames: list[bytes] = []
    for i in range(40):
        frames += [ip_frame(f"10.77.3.{i + 1}", pair.local_v4, "udp", 10)] * (i + 1)
    # One drain, the dump's: a full map evicts peers idle for 10 s (EvictionPolicy), which
    # the sending takes under emulation, and the first peers would make room for the next.
    daemon = DaemonProcess(pair, workdir, "--direction", "ingress", "--max-peers", "16",
                           "--interval", "3600")
    try:
        sent = pair.inject_ingress(frames, workdir)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    expected, _ = expected_counts(frames, {pair.local_v4})
    first_16 = {f"10.77.3.{i + 1}": expected[f"10.77.3.{i + 1}"] for i in range(16)}
    assert_peers(dump, first_16)
    assert len(dump["peers"]) == 16
    overflow = sum(expected[f"10.77.3.{i + 1}"][0] for i in range(16, 40))
    assert dump["totals"]["overflow"] == overflow
    assert dump["totals"]["packets"] + dump["totals"]["overflow"] == sent


def test_gso_counts_wire_segments(pair: NetnsPair, workdir: Path) -> None:
    """TCP with TSO on: egress counts the segments the sender's stack reports sending."""
    offloads = pair.ns(pair.local, "ethtool", "-k", pair.local_if).stdout
    assert "tcp-segmentation-offload: on" in offloads
    daemon = DaemonProcess(pair, workdir, "--direction", "egress")
    try:
        stats = tcp_stream(pair)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    peer = dump["peers"][pair.remote_v4]
    assert peer["packets"] == stats.segs_out
    # SYN: 14 + 20 + 40 bytes of TCP header with options; every other segment
    # carries the timestamp option: 14 + 20 + 32.
    assert peer["bytes"] == stats.bytes_sent + 74 + (stats.segs_out - 1) * 66
    assert stats.skbs < stats.segs_out, "the stack sent no GSO packets: the test proves nothing"
