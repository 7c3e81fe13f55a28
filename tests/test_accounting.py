from __future__ import annotations

import pytest

from ncebpf.accounting import PeerTable, Totals, peer_key, peer_text


@pytest.mark.parametrize("text", ["10.77.0.1", "0.0.0.0", "255.255.255.255", "fd77::1", "::",
                                  "::1", "fe80::1:2"])
def test_key_round_trip(text: str) -> None:
    key = peer_key(text)
    assert len(key) == 16
    assert peer_text(key) == text


def test_ipv4_is_v4_mapped() -> None:
    assert peer_key("10.77.0.1") == bytes(10) + b"\xff\xff" + bytes([10, 77, 0, 1])


def test_a_v4_mapped_ipv6_address_shares_the_ipv4_key() -> None:
    # The key space maps IPv4 into ::ffff:0:0/96; IPv6 packets must not carry such
    # addresses (RFC 4291 2.5.5.2), so the ambiguity is accepted and printed as IPv4.
    assert peer_key("::ffff:10.77.0.1") == peer_key("10.77.0.1")
    assert peer_text(peer_key("::ffff:10.77.0.1")) == "10.77.0.1"


def test_ipv4_keys_sort_numerically() -> None:
    keys = sorted(peer_key(a) for a in ["10.77.0.10", "10.77.0.9", "9.1.1.1"])
    assert [peer_text(k) for k in keys] == ["9.1.1.1", "10.77.0.9", "10.77.0.10"]


def test_table_adds_and_widens_times() -> None:
    table = PeerTable(start=100.0)
    key = peer_key("10.77.0.2")
    table.add(key, 3, 300, 110.0, 120.0)
    table.add(key, 2, 150, 105.0, 118.0)
    record = table.peers[key]
    assert (record.packets, record.bytes, record.first_seen, record.last_seen) == \
        (5, 450, 105.0, 120.0)


def test_totals_frames_adds_every_slot() -> None:
    assert Totals(packets=5, bytes=1, filtered_out=7, unparsed=11, overflow=13).frames == 36
