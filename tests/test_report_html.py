"""The HTML report: escaped names, nothing fetched, the dump's totals, every peer (no root)."""

from __future__ import annotations

import re

import pytest

from ncebpf.report import render
from ncebpf.report.aggregate import aggregate
from ncebpf.report.model import TOTAL_FIELDS, By, Options
from ncebpf.report.render_html import render_html
from tests.report_pages import HOSTILE_NAMES, hostile_snapshot, parse, peer, snapshot

OUR_SCRIPT_START = "// Sortable columns"
URL_IN_CSS = re.compile(r"url\(|@import", re.IGNORECASE)


@pytest.mark.parametrize("by", ["cidr", "domain", "peer"])
def test_a_hostile_ptr_name_is_text_in_the_table_and_the_chart(by: By) -> None:
    page = parse(render_html(aggregate(hostile_snapshot(), Options(by=by))))
    scripts = page.find("script")
    assert len(scripts) == 1 and scripts[0].text.strip().startswith(OUR_SCRIPT_START)
    assert page.find("img") == []
    # The two charts are the only svg elements; no element carries an event handler.
    assert len(page.find("svg")) == 2
    handlers = [(e.tag, a) for e in page.elements for a in e.attrs if a.startswith("on")]
    assert handlers == []
    text = "".join(page.texts)
    for name in HOSTILE_NAMES:
        assert name in text
    member_names = [e.text for e in page.find("span") if e.text in HOSTILE_NAMES]
    assert member_names == list(HOSTILE_NAMES)
    # The chart of the top peers names it too, as SVG text (cut to the chart's width).
    chart_labels = [e.text for e in page.elements if e.text.startswith("fd77::9 ")]
    assert chart_labels and all(HOSTILE_NAMES[0].startswith(label[8:].rstrip("…"))
                                for label in chart_labels)


def test_nothing_in_the_page_is_fetched() -> None:
    html = render_html(aggregate(hostile_snapshot()))
    page = parse(html)
    for element in page.elements:
        for name, value in element.attrs.items():
            if name in {"src", "href", "xlink:href", "action", "srcset", "poster", "data"}:
                pytest.fail(f"<{element.tag} {name}={value!r}> in the page")
            if name != "xmlns":  # the SVG namespace is a name, never fetched
                assert "http:" not in value and "https:" not in value, (element.tag, name)
    styles = [e.text for e in page.find("style")] + [e.attrs.get("style", "")
                                                      for e in page.elements]
    assert not [s for s in styles if URL_IN_CSS.search(s)]
    assert page.find("link") == [] and page.find("iframe") == []
    assert "http:" not in "".join(page.texts) and "https:" not in "".join(page.texts)
    assert page.find("meta", name="viewport")


def test_the_dump_totals_and_the_report_totals_are_the_snapshots() -> None:
    dump = hostile_snapshot()
    report = aggregate(dump)
    page = parse(render_html(report))
    for name in TOTAL_FIELDS:
        (shown,) = page.find("dd", data_total=name)
        if dump.totals[name] is None:
            assert "data-value" not in shown.attrs
            assert shown.text == f"unknown: {dump.unknown[name]}"
        else:
            assert int(shown.attrs["data-value"]) == dump.totals[name]
            assert shown.text == f"{dump.totals[name]:,}"
    for name, value in dump.others.items():
        (shown,) = page.find("dd", data_total=f"others {name}")
        assert int(shown.attrs["data-value"]) == value
    totals = report.totals
    expected: dict[str, int | None] = {
        "groups": totals.groups, "peers": totals.peers, "packets": totals.packets,
        "bytes": totals.bytes, "hits_per_minute": round(totals.R / 60),
        "bytes_per_second": round(totals.W / 3600)}
    for name, count in expected.items():
        (shown,) = page.find("dd", data_report_total=name)
        assert int(shown.attrs["data-value"]) == count
    assert totals.packets == 7 * (1 + 2 + 3 + 40) and totals.bytes == 1_001 * 46
    for name, value in (("hits_per_minute", 17), ("bytes_per_second", 123_456),
                        ("users", 4)):
        (shown,) = page.find("dd", data_summary=name)
        assert int(shown.attrs["data-value"]) == value


def test_every_peer_is_a_member_row_with_its_exact_counts() -> None:
    dump = hostile_snapshot()
    page = parse(render_html(aggregate(dump)))
    addresses = [e.text for e in page.find("span", **{"class": "addr"})]
    assert sorted(addresses) == sorted(p.address for p in dump.peers)
    counts = [int(e.attrs["data-value"]) for e in page.elements
              if e.tag == "td" and "data-value" in e.attrs]
    for member in dump.peers:
        assert member.packets in counts and member.bytes in counts
    groups = page.find("tbody")
    # By bandwidth: 40 000, then a tie at 3 000 bytes/s that the lower address wins.
    assert [g.attrs["data-key"] for g in groups] == ["fd77::/48", "10.77.1.0/24",
                                                      "10.77.2.0/24"]


def test_an_empty_dump_renders_a_page_that_says_so() -> None:
    dump = snapshot((), totals={name: 0 for name in TOTAL_FIELDS}, unknown={}, others={})
    page = parse(render_html(aggregate(dump)))
    assert page.find("p", id="empty") and page.find("table") == [] and page.find("svg") == []
    (peers,) = page.find("dd", data_report_total="peers")
    assert peers.attrs["data-value"] == "0"


def test_an_upstream_dump_without_totals_or_exact_counts() -> None:
    peers = tuple(peer(f"10.77.3.{i}", i)._replace(packets=None, bytes=None) for i in (1, 2))
    dump = snapshot(peers, totals={}, unknown={}, others={}, mode=None)
    page = parse(render_html(aggregate(dump)))
    assert page.find("dd", data_total="packets") == []
    (packets,) = page.find("dd", data_report_total="packets")
    assert packets.text == "unknown: not in this dump"
    assert len([e for e in page.find("td") if e.attrs.get("data-value") == "-1"]) == 2 * 3


@pytest.mark.parametrize("top", [0, 1, 3])
def test_top_says_how_many_groups_it_leaves_out(top: int) -> None:
    page = parse(render_html(aggregate(hostile_snapshot(), Options(top=top))))
    assert len(page.find("tbody")) == top
    assert page.find("p", id="empty") == []
    notes = page.find("p", id="hidden")
    if top == 3:
        assert notes == []
    else:
        (note,) = notes
        assert note.text.startswith(f"{3 - top} more groups not shown (--top {top})")


def test_a_group_named_after_an_soa_is_marked() -> None:
    soa = peer("10.77.4.1", 5, (":ns1.example.org",))
    page = parse(render_html(aggregate(snapshot((soa,)), Options(by="domain"))))
    marks = page.find("span", **{"class": "soa"})
    assert [m.text for m in marks] == ["SOA"]


def test_render_dispatches_html_and_the_page_is_the_same_each_time() -> None:
    report = aggregate(hostile_snapshot())
    assert render(report, "html") == render_html(report)


def test_peers_start_hidden_in_a_large_report_and_every_row_is_still_there() -> None:
    from ncebpf.report.render_html import MEMBERS_SHOWN_UP_TO

    def checkboxes(count: int) -> tuple[list[bool], int]:
        peers = tuple(peer(f"10.77.{i // 250}.{i % 250}", i) for i in range(count))
        page = parse(render_html(aggregate(snapshot(peers))))
        boxes = [e for e in page.find("input") if e.attrs.get("class") == "members"]
        rows = [e for e in page.find("tr") if e.attrs.get("class") == "member"]
        return ["checked" in b.attrs for b in boxes], len(rows)

    shown, rows = checkboxes(MEMBERS_SHOWN_UP_TO)
    assert shown and all(shown) and rows == MEMBERS_SHOWN_UP_TO
    hidden, rows = checkboxes(MEMBERS_SHOWN_UP_TO + 1)
    assert hidden and not any(hidden) and rows == MEMBERS_SHOWN_UP_TO + 1
