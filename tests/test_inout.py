"""In and out per peer, exact, in every mode (issue 13, item 3).

in = the peer sent the frame to a local address, out = the frame went to the
peer: the design §2 peer rule, read in the kernel (XDP, TC) and in user
space (libpcap) alike. Each peer here both sends and receives, a prime
number of frames each way, so a swapped or merged direction cannot pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NetnsPair
from tests.test_pcap_conservation import run_mode

pytestmark = pytest.mark.privileged

# Only the test's own addresses: what the local stack sends on its own (neighbour
# discovery from link-local addresses) stays out of the counts.
TEST_NETS = "net 10.77.0.0/16 or net fd77::/16"


def traffic(pair: NetnsPair) -> tuple[list[bytes], list[bytes], dict[str, list[int]]]:
    """(ingress, egress, expected in packets, in bytes, out packets, out bytes per peer)."""
    local4, local6 = pair.local_v4, pair.local_v6
    plan = [  # peer, frames in, payload in, frames out, payload out, protocol
        ("10.77.3.1", 7, 100, 11, 300, "udp"),
        ("10.77.3.2", 13, 0, 3, 40, "tcp"),
        ("10.77.3.3", 2, 56, 17, 8, "icmp"),
        ("fd77:3::1", 5, 200, 19, 10, "udp"),
        ("fd77:3::2", 23, 12, 2, 1000, "tcp"),
    ]
    ingress: list[bytes] = []
    egress: list[bytes] = []
    expected: dict[str, list[int]] = {}
    for peer, n_in, size_in, n_out, size_out, protocol in plan:
        local = local6 if ":" in peer else local4
        sent = ip_frame(peer, local, protocol, size_in)
        received = ip_frame(local, peer, protocol, size_out)
        ingress += [sent] * n_in
        egress += [received] * n_out
        expected[peer] = [n_in, n_in * len(sent), n_out, n_out * len(received)]
    return ingress, egress, expected


def in_out(record: dict[str, Any]) -> list[int]:
    return [record["in_packets"], record["in_bytes"], record["out_packets"], record["out_bytes"]]


@pytest.mark.parametrize("mode", ["xdp", "tc", "pcap"])
def test_in_and_out_are_exact_in_every_mode(quiet_pair: NetnsPair, workdir: Path,
                                             mode: str) -> None:
    ingress, egress, expected = traffic(quiet_pair)
    dump = run_mode(quiet_pair, workdir, mode, TEST_NETS, ingress, egress)
    peers = dump["peers"]
    assert {peer: in_out(peers[peer]) for peer in expected if peer in peers} == expected
    for record in peers.values():
        assert record["packets"] == record["in_packets"] + record["out_packets"]
        assert record["bytes"] == record["in_bytes"] + record["out_bytes"]
    totals = dump["totals"]
    for field in ("in_packets", "in_bytes", "out_packets", "out_bytes"):
        assert totals[field] == sum(record[field] for record in peers.values()), field
    assert totals["packets"] == totals["in_packets"] + totals["out_packets"]
    assert totals["bytes"] == totals["in_bytes"] + totals["out_bytes"]
