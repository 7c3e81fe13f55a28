"""match/nomatch give the same exact counts in xdp, tc and pcap modes, on real traffic."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, ethernet, ipv4, tcp, udp
from ncebpf.payload import accepts, fold, parse_needle
from tests.netns import DaemonProcess, NetnsPair
from tests.test_kernel_counts import frame_addresses

pytestmark = pytest.mark.privileged

PAYLOAD, SNAPLEN = 42, 120  # the UDP payload of an IPv4 frame, 78 bytes of it
FILTER = "udp or tcp"


def udp_frame(src: str, dst: str, data: bytes) -> bytes:
    return ethernet(ipv4(src, dst, IPPROTO_UDP, udp(data, 40000, 5353)), ETH_P_IP)


def at_window_end(needle: bytes, overhang: int) -> bytes:
    """UDP data that puts needle's end `overhang` bytes past the window's end."""
    return bytes(SNAPLEN - PAYLOAD - len(needle) + overhang) + needle + bytes(10)


def traffic(local: str) -> tuple[list[bytes], list[bytes]]:
    ingress = [
        udp_frame("10.77.6.1", local, b"GET x-EVIL / HTTP"),  # match, any case
        udp_frame("10.77.6.2", local, b"\x00\x00 then X-Evil after NULs"),  # NUL before it
        udp_frame("10.77.6.3", local, b"x-evil and \x00BAD too"),  # match and nomatch
        udp_frame("10.77.6.4", local, at_window_end(b"x-evil", 0)),  # ends on the edge
        udp_frame("10.77.6.5", local, at_window_end(b"x-evil", 1)),  # one byte past it
        udp_frame("10.77.6.6", local, b"short x-evil"),  # far shorter than snaplen
        udp_frame("10.77.6.7", local, b"caf\xe9 \xe9T\xe9 \xff\xff"),  # high bytes
        udp_frame("10.77.6.8", local, b"nothing to see"),
        ethernet(ipv4("10.77.6.9", local, IPPROTO_TCP, tcp()), ETH_P_IP),  # no window at all
    ]
    egress = [
        udp_frame(local, "10.77.7.1", b"reply X-EVIL"),
        udp_frame(local, "10.77.7.2", b"reply \x00bAd"),
        udp_frame(local, "10.77.7.3", b"\xe9t\xe9"),
    ]
    return ingress * 3, egress * 2


NEEDLES = [
    pytest.param(r"x-evil", "", id="match"),
    pytest.param("", r"\x00bad", id="nomatch alone, with a NUL"),
    pytest.param(r"x-evil", r"\x00bad", id="match and nomatch"),
    pytest.param(r"\xe9t\xe9", r"\xff\xff", id="bytes above 0x7f"),
]


def expected(frames: list[bytes], local: str, match: bytes, nomatch: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for frame in frames:
        if not accepts(frame, match, nomatch, PAYLOAD, SNAPLEN):
            continue
        addresses = frame_addresses(frame)
        assert addresses is not None
        src, dst = addresses
        peer = dst if src == local else src
        counts[peer] = counts.get(peer, 0) + 1
    return counts


def run_mode(pair: NetnsPair, workdir: Path, mode: str, match: str, nomatch: str,
             ingress: list[bytes], egress: list[bytes]) -> dict[str, Any]:
    run_dir = workdir / mode
    run_dir.mkdir()
    args = ["--mode", mode, "--payload", str(PAYLOAD), "--snaplen", str(SNAPLEN),
            "--filter", FILTER]
    args += ["--match", match] if match else []
    args += ["--nomatch", nomatch] if nomatch else []
    daemon = DaemonProcess(pair, run_dir, *args)
    try:
        pair.inject_ingress(ingress, run_dir)
        pair.inject_egress(egress, run_dir)
        time.sleep(0.3)  # let the last frames through the receive path
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert dump["mode"] == mode, daemon.stderr
    return dump


@pytest.mark.parametrize(("match", "nomatch"), NEEDLES)
def test_same_counts_in_every_mode(silent_pair: NetnsPair, workdir: Path, match: str,
                                   nomatch: str) -> None:
    pair = silent_pair
    ingress, egress = traffic(pair.local_v4)
    want = expected(ingress + egress, pair.local_v4, fold(parse_needle(match)),
                    fold(parse_needle(nomatch)))
    assert want, "the traffic should match something"
    results = {}
    for mode in ("xdp", "tc", "pcap"):
        dump = run_mode(pair, workdir, mode, match, nomatch, ingress, egress)
        results[mode] = {peer: fields["packets"] for peer, fields in dump["peers"].items()}
        assert dump["totals"]["dropped"] == 0
        assert dump["totals"]["filtered_out"] == len(ingress + egress) - sum(want.values())
    assert results["xdp"] == want
    assert results["tc"] == want
    assert results["pcap"] == want


def test_auto_mode_says_why_it_uses_pcap(silent_pair: NetnsPair, workdir: Path) -> None:
    pair = silent_pair
    daemon = DaemonProcess(pair, workdir, "--match", "y" * 40, "--payload", "42",
                           "--snaplen", "200")
    try:
        pair.inject_ingress([udp_frame("10.77.6.1", pair.local_v4, b"y" * 40)] * 3, workdir)
        time.sleep(0.3)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0
    assert dump["mode"] == "pcap"
    assert dump["peers"]["10.77.6.1"]["packets"] == 3
    reasons = [line for line in daemon.stderr.splitlines() if "libpcap in user space" in line]
    assert len(reasons) == 1
    assert "the match string is 40 bytes; the kernel search takes at most 32" in reasons[0]


def test_auto_mode_runs_untranslatable_filters_with_libpcap(silent_pair: NetnsPair,
                                                            workdir: Path) -> None:
    """`inbound` reads socket metadata, which only the capture socket's filter sees; every
    inbound frame is counted, the first after the start too (libpcap's own pcap_setfilter,
    and so tcpdump, runs the filter in user space on the first frame and loses it)."""
    pair = silent_pair
    daemon = DaemonProcess(pair, workdir, "inbound and udp")
    try:
        pair.inject_ingress([udp_frame("10.77.6.1", pair.local_v4, b"in")] * 5, workdir)
        pair.inject_egress([udp_frame(pair.local_v4, "10.77.7.1", b"out")] * 4, workdir)
        time.sleep(0.3)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0
    assert dump["mode"] == "pcap"
    assert {peer: f["packets"] for peer, f in dump["peers"].items()} == {"10.77.6.1": 5}
    assert "packet type (inbound/outbound)" in daemon.stderr
