"""IPv4 and IPv4-mapped IPv6 peers stay apart (issue 10, item 5).

A wire IPv6 address can be any 128 bits, ::ffff:a.b.c.d included; a frame
from ::ffff:10.77.0.3 is not a frame from 10.77.0.3, and one from
::ffff:<our IPv4 address> is not ours.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.reversename
import pytest

from ncebpf.accounting import KEY_SIZE, peer_key, peer_text
from ncebpf.filter.frames import IPPROTO_UDP, ethernet, ip_frame, ipv4, ipv6, udp
from ncebpf.kernel.maps import local_slot_of
from ncebpf.packet import addresses
from ncebpf.resolve import reverse_name
from tests.netns import NCEBPF, DaemonProcess, NetnsPair
from tests.test_pcap_conservation import run_mode

LOCAL4, LOCAL6 = NetnsPair.local_v4, NetnsPair.local_v6
PEER4, MAPPED = "10.77.0.3", "::ffff:10.77.0.3"
MAPPED_LOCAL = f"::ffff:{LOCAL4}"
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD

# The issue's frames: 5 IPv6 of 162 bytes (810) and 5 IPv4 of 142 bytes (710).
FROM_MAPPED = ethernet(ipv6(MAPPED, LOCAL6, IPPROTO_UDP, udp(bytes(100))), ETH_P_IPV6)
FROM_PEER4 = ethernet(ipv4(PEER4, LOCAL4, IPPROTO_UDP, udp(bytes(100))), ETH_P_IP)
# From ::ffff:<our IPv4>: a peer like any other, never taken for this host.
FROM_MAPPED_LOCAL = ethernet(ipv6(MAPPED_LOCAL, LOCAL6, IPPROTO_UDP, udp(bytes(20))),
                             ETH_P_IPV6)
FRAMES = [FROM_MAPPED] * 5 + [FROM_PEER4] * 5 + [FROM_MAPPED_LOCAL] * 3
WANT = {PEER4: (5, 710), MAPPED: (5, 810), MAPPED_LOCAL: (3, 3 * 82)}


def test_the_issue_frames_have_the_issue_sizes() -> None:
    assert (len(FROM_MAPPED) * 5, len(FROM_PEER4) * 5) == (810, 710)


def test_the_families_have_different_keys() -> None:
    assert peer_key(PEER4) != peer_key(MAPPED)
    assert peer_key(LOCAL4) != peer_key(MAPPED_LOCAL)
    assert len(peer_key(PEER4)) == len(peer_key(MAPPED)) == len(peer_key("fd77::1")) == KEY_SIZE


def test_each_family_prints_its_own_form() -> None:
    # RFC 5952 §5: an IPv4-mapped IPv6 address is written with the dotted tail.
    assert peer_text(peer_key(PEER4)) == PEER4
    assert peer_text(peer_key(MAPPED)) == MAPPED
    for text in ("fd77::1", "::1", "::", "::a4d:3", "::ffff:0.0.0.0", "1:2:3:4:5:6:7:8",
                 "::ffff:1:2:3", "64:ff9b::a4d:3", "fd77::ffff:a4d:3"):
        assert peer_text(peer_key(text)) == text, text


def test_keys_sort_ipv4_first_then_ipv6_numerically() -> None:
    texts = ["fd77::1", MAPPED, "::1", "10.77.0.10", PEER4, "192.168.0.1", "::"]
    ordered = [peer_text(key) for key in sorted(peer_key(t) for t in texts)]
    assert ordered == [PEER4, "10.77.0.10", "192.168.0.1", "::", "::1", MAPPED, "fd77::1"]


def test_the_parser_keys_a_mapped_source_as_ipv6() -> None:
    assert addresses(FROM_MAPPED) == (peer_key(MAPPED), peer_key(LOCAL6))
    assert addresses(FROM_PEER4) == (peer_key(PEER4), peer_key(LOCAL4))


def test_outgoing_to_the_mapped_twin_of_our_address_names_it() -> None:
    frame = ip_frame(LOCAL6, MAPPED_LOCAL, "udp", 10)
    assert addresses(frame) == (peer_key(LOCAL6), peer_key(MAPPED_LOCAL))


def test_local_slots_tell_the_families_apart() -> None:
    # Not required for correctness (a slot holds the whole key), but a mapped twin
    # of a local address should not even share its slot.
    assert local_slot_of(peer_key(LOCAL4)) != local_slot_of(peer_key(MAPPED_LOCAL))


def test_the_resolver_asks_ip6_arpa_for_a_mapped_peer() -> None:
    assert str(reverse_name(peer_key(PEER4))) == "3.0.77.10.in-addr.arpa."
    assert str(reverse_name(peer_key(MAPPED))) == (
        "3.0.0.0.d.4.a.0.f.f.f.f." + "0." * 20 + "ip6.arpa.")
    for other in ("fd77::1", "::1", "10.77.0.3"):  # the rest as dnspython names them
        assert reverse_name(peer_key(other)) == dns.reversename.from_address(other)


def peer_counts(dump: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {peer: (f["packets"], f["bytes"]) for peer, f in dump["peers"].items()}


@pytest.mark.privileged
def test_mapped_and_ipv4_peers_count_apart_in_every_mode(silent_pair: NetnsPair,
                                                         workdir: Path) -> None:
    for mode in ("xdp", "tc", "pcap"):
        dump = run_mode(silent_pair, workdir, mode, "", FRAMES)
        assert (mode, peer_counts(dump)) == (mode, WANT)
        assert dump["totals"]["packets"] == len(FRAMES)


@pytest.fixture
def counting(silent_pair: NetnsPair, workdir: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(silent_pair, workdir, "--mode", "xdp")
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.stderr


@pytest.mark.privileged
def test_the_perl_dump_lists_both_peers(silent_pair: NetnsPair, workdir: Path,
                                        counting: DaemonProcess) -> None:
    assert silent_pair.inject_ingress(FRAMES, workdir) == len(FRAMES)
    time.sleep(0.3)  # let the last frames through the receive path
    out = subprocess.run([*NCEBPF, "dump", "--format", "perl", *counting.args],
                         capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^\t'([^']+)'\s=> \{\n\t\tB\t=> (\d+),\n\t\tC\t=> (\d+),", out, re.M)
    assert {peer: (int(c), int(b)) for peer, b, c in listed} == WANT, out
