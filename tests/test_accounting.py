"""The peer table and the upstream rate math (spec §7, §9, §13)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ncebpf.accounting import (
    IPV4_MAPPED_PREFIX,
    KEY_SIZE,
    GlobalRates,
    PeerTable,
    Totals,
    ipv4_key,
    ipv6_key,
    peer_key,
    peer_text,
)


@pytest.mark.parametrize("text", ["10.77.0.1", "0.0.0.0", "255.255.255.255", "fd77::1", "::",
                                  "::1", "fe80::1:2"])
def test_key_round_trip(text: str) -> None:
    key = peer_key(text)
    assert len(key) == KEY_SIZE
    assert peer_text(key) == text


def test_ipv4_is_family_4_then_v4_mapped() -> None:
    assert peer_key("10.77.0.1") == bytes([4, 0, 0, 0]) + bytes(10) + b"\xff\xff" + \
        bytes([10, 77, 0, 1])


def test_a_v4_mapped_ipv6_address_has_a_key_of_its_own() -> None:
    # Anyone can send from ::ffff:a.b.c.d (issue 10, item 5): it is an IPv6 peer,
    # printed in RFC 5952 §5's mixed notation.
    assert peer_key("::ffff:10.77.0.1") == bytes([6, 0, 0, 0]) + IPV4_MAPPED_PREFIX + \
        bytes([10, 77, 0, 1])
    assert peer_text(peer_key("::ffff:10.77.0.1")) == "::ffff:10.77.0.1"


def test_ipv4_keys_sort_numerically() -> None:
    keys = sorted(peer_key(a) for a in ["10.77.0.10", "10.77.0.9", "9.1.1.1"])
    assert [peer_text(k) for k in keys] == ["9.1.1.1", "10.77.0.9", "10.77.0.10"]


def test_record_creation_matches_upstream_init_t() -> None:
    table = PeerTable(start=1098)
    table.add_peer(peer_key("10.77.0.2"), 1, 234, 9876, 9876)
    record = table.peers[peer_key("10.77.0.2")]
    assert (record.B, record.C, record.E, list(record.N), record.R, record.S, record.T,
            record.W) == (234, 1, 9876, [], 0.0, 1098, 0, 0.0)


def test_global_rate_worked_example() -> None:
    """Spec §7.1: start 1000, 100 x 500 B in [1000, 1299], one at 1300, 29 more, one at 1360."""
    rates = GlobalRates(start=1000)
    for i in range(100):
        rates.add(1, 500, 1000 + i * 3)
    rates.add(1, 500, 1300)
    assert (rates.rate, rates.bw) == (1200.0, 600000.0)
    assert (rates.pending_hits, rates.pending_bytes, rates.next_update) == (1, 500, 1360)
    for i in range(29):
        rates.add(1, 500, 1301 + i)
    rates.add(1, 500, 1360)
    assert rates.rate == pytest.approx(1209.84, abs=0.005)
    assert rates.bw == pytest.approx(604918.03, abs=0.005)
    assert (f"{rates.hits_per_minute:.0f}", f"{rates.bytes_per_second:.0f}") == ("20", "168")


def test_peer_rate_worked_example() -> None:
    """Spec §7.2: start 1000, first seen 2000, updates at 2310 and 2700."""
    table = PeerTable(start=1000)
    key = peer_key("10.77.0.2")
    for i in range(10):
        table.add(key, 1, 100, 2000 + i * 25, 2000 + i * 25)
    record = table.peers[key]
    assert (record.C, record.B) == (10, 1000)
    table.add(key, 1, 100, 2310, 2310)
    assert record.R == pytest.approx(9.207, abs=0.0005)
    assert record.W == pytest.approx(920.72, abs=0.005)
    assert (record.E, record.B, record.C) == (2310, 100, 1)
    for i in range(19):
        table.add(key, 1, 100, 2311 + i * 15, 2311 + i * 15)  # all before E + 300
    assert (record.C, record.B) == (20, 2000)
    table.add(key, 1, 100, 2700, 2700)
    assert (f"{record.R:.0f}", f"{record.W:.0f}") == ("26", "2635")
    assert record.R == pytest.approx(26.35, abs=0.005)
    assert (record.packets, record.bytes) == (31, 3100)


def test_peer_created_in_the_start_second() -> None:
    """Spec §7.2: S = E = 1000, 10 hits / 1000 B by 1299, a packet at 1305."""
    table = PeerTable(start=1000)
    key = peer_key("10.77.0.3")
    table.add(key, 1, 100, 1000, 1000)
    for i in range(9):
        table.add(key, 1, 100, 1100 + i * 20, 1100 + i * 20)
    table.add(key, 1, 100, 1305, 1305)
    record = table.peers[key]
    assert record.R == pytest.approx(118.03, abs=0.005)
    assert record.W == pytest.approx(11803.28, abs=0.005)


def test_purge_boundary_exactly_one_day_survives() -> None:
    """Upstream t/purge.t's boundaries, all in one pass (no one-key-per-second pacing)."""
    now = 200_000
    table = PeerTable(start=0)
    ages = {"10.77.0.1": 86401, "10.77.0.2": 86401, "10.77.0.3": 86400, "10.77.0.4": 86399,
            "10.77.0.5": 86390}
    for address, age in ages.items():
        table.add(peer_key(address), 1, 60, now - age, now - age)
    assert table.purge(now) == 2
    assert sorted(peer_text(k) for k in table.peers) == ["10.77.0.3", "10.77.0.4", "10.77.0.5"]
    assert table.purge(now + 1) == 1  # 10.77.0.3 is now one day and a second old


def test_purge_keeps_working_after_an_empty_pass() -> None:
    """Upstream §15.11: a pass over an empty table stopped purging for good."""
    table = PeerTable(start=0)
    assert table.purge(100) == 0
    table.add(peer_key("10.77.0.9"), 1, 60, 200, 200)
    assert table.purge(200 + 86401) == 1


def test_reset_starts_over_and_counts_totals_from_the_reset() -> None:
    table = PeerTable(start=1000)
    table.add(peer_key("10.77.0.2"), 3, 300, 1001, 1002)
    table.totals = Totals(packets=3, bytes=300, unparsed=2)
    table.reset(5000)
    assert table.peers == {} and table.start == 5000 and table.rates.rate == 0
    assert table.totals == Totals()
    table.add(peer_key("10.77.0.2"), 1, 90, 5001, 5001)
    table.totals = Totals(packets=4, bytes=390, unparsed=2)
    assert table.totals == Totals(packets=1, bytes=90)
    assert table.peers[peer_key("10.77.0.2")].S == 5000


def test_totals_frames_adds_every_slot() -> None:
    assert Totals(packets=5, bytes=1, filtered_out=7, unparsed=11, overflow=13).frames == 36


@given(st.binary(min_size=16, max_size=16),
       st.sampled_from([b"", bytes(10), bytes(10) + b"\xff\xff", bytes(12), bytes(14)]))
def test_peer_text_is_what_the_ipaddress_module_writes(address: bytes, prefix: bytes) -> None:
    address = prefix + address[len(prefix):]
    ip = ipaddress.IPv6Address(address)
    # The one difference: a mapped address keeps its dotted tail (RFC 5952 §5).
    expected = f"::ffff:{ip.ipv4_mapped}" if ip.ipv4_mapped else str(ip)
    assert peer_text(ipv6_key(address)) == expected
    assert peer_text(ipv4_key(address[12:])) == str(ipaddress.IPv4Address(address[12:]))


def test_new_peers_are_kept_for_names_only_when_wanted() -> None:
    for wanted in (True, False):
        table = PeerTable(start=1000, track_created=wanted)
        table.add(peer_key("10.77.0.2"), 1, 60, 1001, 1001)
        table.add(peer_key("fd77::2"), 1, 90, 1001, 1001)
        assert table.take_created() == ([peer_key("10.77.0.2"), peer_key("fd77::2")]
                                        if wanted else [])
        assert table.take_created() == []
