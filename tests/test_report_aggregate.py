"""Grouping peers for reports (ncebpf/report/aggregate.py): pure, no root.

Each of upstream's report defects (spec §11.1-§11.2, §15.22-23) has a test
that upstream's library fails.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ncebpf.report.aggregate import (
    NO_NAME,
    aggregate,
    prefix_of,
    registrable_domain,
    upstream_domain_key,
)
from ncebpf.report.model import BY_CHOICES, SORT_CHOICES, Options, Peer, Snapshot


def peer(address: str, *names: str, R: float = 0, W: float = 0, E: int = 1000,
         packets: int | None = 1, nbytes: int | None = 100) -> Peer:
    return Peer(address=address, B=0, C=0, E=E, N=names, R=R, S=900, T=0, W=W,
                packets=packets, bytes=nbytes)


def snapshot(*peers: Peer) -> Snapshot:
    return Snapshot(source="test", start=900, current=2000, hits_per_minute=0,
                    bytes_per_second=0, users=len(peers), device="eth0", promiscuous=False,
                    filter="", header="", peers=peers)


def keys(report_groups: object) -> list[str]:
    return [g.key for g in report_groups]  # type: ignore[attr-defined]


def test_a_last_prefix_of_two_peers_is_reported() -> None:
    # Upstream's by_cidr24 emitted the open group only when the walk's last IP was
    # its first member: two peers in one /24 made an empty report (§15.22).
    report = aggregate(snapshot(peer("10.77.1.1", W=3600), peer("10.77.1.2", W=7200)))
    assert keys(report.groups) == ["10.77.1.0/24"]
    assert [p.address for p in report.groups[0].members] == ["10.77.1.1", "10.77.1.2"]
    assert report.totals.W == 10800 and report.totals.peers == 2


def test_an_empty_table_gives_an_empty_report() -> None:
    # Upstream died on an empty table (§11.1).
    report = aggregate(snapshot())
    assert report.groups == () and report.totals.groups == 0 and report.totals.W == 0
    assert report.totals.packets == 0


def test_members_are_in_numeric_order_and_ipv6_has_its_own_prefix_length() -> None:
    report = aggregate(snapshot(peer("10.77.1.10"), peer("10.77.1.9"), peer("fd77:1:2::5"),
                                peer("fd77:1:2:3::1"), peer("fd77:1:3::1")),
                       Options(cidr6=48))
    assert keys(report.groups) == ["10.77.1.0/24", "fd77:1:2::/48", "fd77:1:3::/48"]
    assert [p.address for p in report.groups[0].members] == ["10.77.1.9", "10.77.1.10"]
    assert [p.address for p in report.groups[1].members] == ["fd77:1:2::5", "fd77:1:2:3::1"]


@pytest.mark.parametrize(("address", "cidr4", "cidr6", "prefix"), [
    ("10.77.200.201", 24, 48, "10.77.200.0/24"),
    ("10.77.200.201", 16, 48, "10.77.0.0/16"),
    ("10.77.200.201", 32, 48, "10.77.200.201/32"),
    ("10.77.200.201", 0, 48, "0.0.0.0/0"),
    ("fd77:aaaa:bbbb:cccc::1", 24, 48, "fd77:aaaa:bbbb::/48"),
    ("fd77:aaaa:bbbb:cccc::1", 24, 64, "fd77:aaaa:bbbb:cccc::/64"),
    ("fd77::1", 24, 128, "fd77::1/128"),
    ("::ffff:10.77.0.3", 24, 96, "::ffff:0.0.0.0/96"),
])
def test_prefix_of(address: str, cidr4: int, cidr6: int, prefix: str) -> None:
    assert prefix_of(address, cidr4, cidr6) == prefix
    network = ipaddress.ip_network(prefix)
    assert ipaddress.ip_address(address) in network


def test_groups_are_ordered_by_bandwidth_as_shown_then_lowest_address() -> None:
    # Upstream sorts by int(W/3600): 3600 and 7199 B/h are both 1 B/s and tie.
    report = aggregate(snapshot(peer("10.77.3.1", W=3600), peer("10.77.2.1", W=7199),
                                peer("10.77.1.1", W=36000), peer("10.77.4.1", W=100)))
    assert keys(report.groups) == ["10.77.1.0/24", "10.77.2.0/24", "10.77.3.0/24",
                                   "10.77.4.0/24"]


@pytest.mark.parametrize(("sort", "expected"), [
    ("hits", ["10.77.2.0/24", "10.77.1.0/24", "10.77.3.0/24"]),
    ("peers", ["10.77.3.0/24", "10.77.1.0/24", "10.77.2.0/24"]),
    ("last", ["10.77.1.0/24", "10.77.3.0/24", "10.77.2.0/24"]),
])
def test_other_orders(sort: str, expected: list[str]) -> None:
    report = aggregate(snapshot(
        peer("10.77.1.1", R=10, E=3000), peer("10.77.2.1", R=50, E=1000),
        peer("10.77.3.1", R=1, E=2000), peer("10.77.3.2", R=1, E=1500)),
        Options(sort=sort))  # type: ignore[arg-type]
    assert keys(report.groups) == expected


def test_top_keeps_the_totals_of_every_group() -> None:
    peers = [peer(f"10.77.{i}.1", W=3600 * i, packets=i, nbytes=10 * i) for i in range(1, 8)]
    report = aggregate(snapshot(*peers), Options(top=3))
    assert keys(report.groups) == ["10.77.7.0/24", "10.77.6.0/24", "10.77.5.0/24"]
    assert report.totals.groups == 7 and report.totals.peers == 7
    assert report.totals.packets == 28 and report.totals.bytes == 280


def test_registrable_domains_from_the_public_suffix_list() -> None:
    assert registrable_domain("a.example.co.uk") == ("example.co.uk", False)
    assert registrable_domain("B.Example.CO.UK.") == ("example.co.uk", False)
    assert registrable_domain("www.example.com.au") == ("example.com.au", False)
    assert registrable_domain(":ns1.example.net") == ("example.net", True)
    assert registrable_domain("localhost") == ("localhost", False)
    assert registrable_domain("") == (NO_NAME, False)
    assert registrable_domain(":") == (NO_NAME, False)
    assert registrable_domain(".") == (NO_NAME, False)
    assert registrable_domain("10.77.9.1") == ("10.77.9.1", False)  # not "9.1"
    assert registrable_domain("FD77::1") == ("fd77::1", False)
    # The PSL's private section is left out: a cloud host is its provider's.
    assert registrable_domain("ec2-10-77-0-1.compute-1.amazonaws.com") == \
        ("amazonaws.com", False)


def test_by_domain_shares_a_registrable_domain_where_upstream_collapsed_co_uk() -> None:
    peers = snapshot(peer("10.77.1.1", "a.example.co.uk", W=3600),
                     peer("10.77.9.1", "b.example.co.uk", W=3600),
                     peer("10.77.5.1", "www.other.co.uk", W=7200),
                     peer("10.77.6.1", W=360000),
                     peer("10.77.6.2", ":ns.example.co.uk", W=36000),
                     peer("fd77::1"))
    report = aggregate(peers, Options(by="domain"))
    groups = {g.label: [p.address for p in g.members] for g in report.groups}
    assert groups == {
        NO_NAME: ["10.77.6.1", "fd77::1"],
        "example.co.uk (SOA: no name of its own)": ["10.77.6.2"],
        "other.co.uk": ["10.77.5.1"],
        "example.co.uk": ["10.77.1.1", "10.77.9.1"],
    }
    assert [g.soa for g in report.groups] == [False, True, False, False]
    # Upstream's key puts every *.co.uk into one row, as its operators may want.
    upstream = aggregate(peers, Options(by="domain", domain_rule="upstream"))
    labels = sorted((g.label, len(g.members)) for g in upstream.groups)
    # 10.77.6.0/24's lowest peer has no name: the whole /24 goes with it (upstream's unit).
    assert labels == [(NO_NAME, 3), ("co.uk", 3)]


def test_upstream_domain_rows_are_merged_not_overwritten() -> None:
    # Upstream sorted /24 groups by host name and merged only adjacent ones with the
    # same key, overwriting the earlier row otherwise (§15.23): here a.example.com and
    # z.example.com are separated by m.other.net, and upstream lost the first row.
    peers = snapshot(peer("10.77.1.1", "a.example.com", W=3600),
                     peer("10.77.2.1", "m.other.net", W=7200),
                     peer("10.77.3.1", "z.example.com", W=36000))
    report = aggregate(peers, Options(by="domain", domain_rule="upstream"))
    rows = {g.key: (g.W, [p.address for p in g.members]) for g in report.groups}
    assert rows == {"moc.elpmaxe": (39600, ["10.77.1.1", "10.77.3.1"]),
                    "ten.rehto": (7200, ["10.77.2.1"])}
    assert report.totals.W == 46800


@pytest.mark.parametrize(("name", "key"), [
    ("www.example.com", "moc.elpmaxe"),
    ("example.com.au", "ua.moc.elpmaxe"),
    ("a.example.co.uk", "ku.oc"),
    (":ns.example.net", "ten.elpmaxe"),
    ("WWW.Example.COM", "moc.elpmaxe"),
    ("localhost", "tsohlacol"),
    ("", ""),
])
def test_upstream_domain_key(name: str, key: str) -> None:
    assert upstream_domain_key(name) == key


def test_by_peer_is_one_group_per_peer() -> None:
    report = aggregate(snapshot(peer("10.77.1.2", W=1), peer("10.77.1.1", W=7200)),
                       Options(by="peer"))
    assert keys(report.groups) == ["10.77.1.1", "10.77.1.2"]


def test_exact_counts_are_unknown_when_the_dump_has_none() -> None:
    report = aggregate(snapshot(peer("10.77.1.1", packets=None, nbytes=None),
                                peer("10.77.1.2")))
    assert report.groups[0].packets is None and report.totals.bytes is None


addresses = st.one_of(
    st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0x0A4D0000, 0x0A4DFFFF)),
    st.builds(lambda n: str(ipaddress.IPv6Address((0xFD77 << 112) | n)),
              st.integers(0, (1 << 112) - 1)))
names = st.lists(st.sampled_from(["a.example.co.uk", "b.example.com", ":ns.example.net",
                                  "x.y", "localhost", "WWW.EXAMPLE.COM."]), max_size=2)


@given(st.dictionaries(addresses, st.tuples(names, st.integers(0, 10**6),
                                            st.integers(0, 10**9)), max_size=40),
       st.sampled_from(BY_CHOICES), st.sampled_from(SORT_CHOICES),
       st.sampled_from(["psl", "upstream"]), st.integers(0, 32), st.integers(0, 128))
def test_every_peer_is_in_exactly_one_group_and_the_sums_are_the_dumps(
        table: dict[str, tuple[list[str], int, int]], by: str, sort: str, rule: str,
        cidr4: int, cidr6: int) -> None:
    peers = [peer(a, *n, R=p, W=b, packets=p, nbytes=b) for a, (n, p, b) in table.items()]
    report = aggregate(snapshot(*peers), Options(by=by, sort=sort, domain_rule=rule,  # type: ignore[arg-type]
                                                 cidr4=cidr4, cidr6=cidr6))
    members = [p.address for g in report.groups for p in g.members]
    assert sorted(members) == sorted(table)
    assert report.totals.peers == len(table) == len(members)
    assert report.totals.packets == sum(p for _, p, _ in table.values())
    assert report.totals.bytes == sum(b for _, _, b in table.values())
    assert report.totals.W == sum(g.W for g in report.groups)


def test_exact_counts_order_a_report_and_unknown_counts_go_last() -> None:
    report = aggregate(snapshot(peer("10.77.1.1", nbytes=5), peer("10.77.2.1", nbytes=None),
                                peer("10.77.3.1", nbytes=50)), Options(sort="bytes"))
    assert keys(report.groups) == ["10.77.3.0/24", "10.77.1.0/24", "10.77.2.0/24"]
