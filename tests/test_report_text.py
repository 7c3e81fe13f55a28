"""The text report in upstream's layout (spec §11.3): a byte-exact golden file, and escaping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.report.aggregate import aggregate
from ncebpf.report.model import Options, Peer, Snapshot
from ncebpf.report.render_text import contact_time, render_text, safe_name

GOLDEN = Path(__file__).parent / "golden"
# An upstream-style header (spec §10.2), as read from a .stats file.
HEADER = ("\n# Net::Connection::Sniffer version 0.36\n"
          "# start:\t1145923212,\tTue Apr 25 00:00:12 2006\n"
          "# current:\t1145930412,\tTue Apr 25 02:00:12 2006\n"
          "# hits:\t\t95 per minute\n# bytes:\t12102 per second\n# users:\t7\n"
          "# device:\teth0\tnon-promiscuous\n# bpf:\t\tdst host 10.77.0.1\n")


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Upstream prints local time: the golden file is in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def upstream_peer(address: str, R: int, W: int, E: int, *names: str) -> Peer:
    # A .stats file's record: R and W rounded by the daemon, no exact counts.
    return Peer(address=address, B=0, C=1, E=E, N=names, R=R, S=1145923212, T=0, W=W)


def fixed_snapshot() -> Snapshot:
    peers = (
        upstream_peer("10.77.1.20", 723, 43359, 1145926000, "host.example.com"),
        upstream_peer("10.77.1.3", 60, 3600, 1145929000, "a.example.com", "alias.example.net"),
        upstream_peer("10.77.2.1", 4800, 40000000, 1145930000),
        upstream_peer("10.77.3.7", 120, 7200, 1145925000, ":ns.example.org"),
        upstream_peer("10.77.3.200", 30, 1800, 1145930400, "x.example.org"),
        upstream_peer("192.168.100.200", 2, 70, 1145924000, "far.example.co.uk"),
        upstream_peer("10.77.4.9", 0, 0, 1145923300),
    )
    return Snapshot(source="fixed", start=1145923212, current=1145930412,
                    hits_per_minute=95, bytes_per_second=12102, users=7, device="eth0",
                    promiscuous=False, filter="dst host 10.77.0.1", header=HEADER, peers=peers)


@pytest.mark.parametrize(("options", "golden"), [
    (Options(), "report-cidr24.txt"),
    (Options(by="domain", domain_rule="upstream"), "report-subdomain.txt"),
])
def test_golden(options: Options, golden: str) -> None:
    assert render_text(aggregate(fixed_snapshot(), options)) == \
        (GOLDEN / golden).read_text()


def test_upstreams_numbers_where_upstream_was_right() -> None:
    # Worked by hand from Report.pm (§11.3): 10.77.1.0/24 holds 10.77.1.3 and
    # 10.77.1.20: R = 783/h → "13" per minute, W = 46959 B/h → "13" per second.
    text = render_text(aggregate(fixed_snapshot()))
    assert "10.77.1.3\ta.example.com\n\t\talias.example.net\n10.77.1.20\thost.example.com\n" \
        "     13\t -- 13\t -- 2\tapr 25 01:36:40\n" in text
    # Totals: ΣR = 5735 → 96 per minute (95.58), ΣW = 40056029 → 11127 per second.
    assert text.endswith("rate\t\t= 96 connections per minute\n"
                         "bandwidth\t= 11127 bytes per second\nusers\t\t= 7\n")


def test_an_empty_report_keeps_the_layout() -> None:
    empty = Snapshot(source="x", start=1, current=2, hits_per_minute=0, bytes_per_second=0,
                     users=0, device="eth0", promiscuous=False, filter="", header="\n", peers=())
    text = render_text(aggregate(empty))
    assert text.count("qrys/mn -- bytes/sec") == 2 and text.endswith("users\t\t= 0\n")


def test_top_says_what_it_left_out() -> None:
    text = render_text(aggregate(fixed_snapshot(), Options(top=2)))
    assert "\n(3 more groups, not shown: --top 2)\n" in text
    assert text.endswith("users\t\t= 7\n")  # the totals cover every group


def test_contact_time_is_upstreams_my_time() -> None:
    assert contact_time(1145923212) == "apr 25 00:00:12"
    assert contact_time(0) == "jan 01 00:00:00"
    assert contact_time(1145930412) == "apr 25 02:00:12"


@pytest.mark.parametrize(("name", "shown"), [
    ("host.example.com", "host.example.com"),
    ("<script>alert(1)</script>", "\\x{3c}script\\x{3e}alert(1)\\x{3c}/script\\x{3e}"),
    ("two\nlines\t", "two\\x{a}lines\\x{9}"),
    ("it's\\", "it\\x{27}s\\x{5c}"),
])
def test_names_cannot_break_a_line_or_a_page(name: str, shown: str) -> None:
    assert safe_name(name) == shown
