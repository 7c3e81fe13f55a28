"""The HTML report in a real browser: headless Chromium reads its DOM and takes screenshots.

Not `privileged` (no kernel, no namespaces), but it runs Chromium as root with
--no-sandbox as the suite does under CI: outside CI it skips when not root or
when Debian's `chromium` is missing; with CI=true it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ncebpf.report.aggregate import aggregate
from ncebpf.report.model import TOTAL_FIELDS, Report
from ncebpf.report.render_html import render_html
from tests.browser import chromium_path, dump_dom, png_size, screenshot
from tests.report_pages import (
    HOSTILE_NAMES,
    Element,
    Page,
    parse,
    peer,
    realistic_snapshot,
    snapshot,
)

DESKTOP = (1280, 1800)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def browser() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "runs chromium as root (--no-sandbox), as under CI"
    elif chromium_path() is None:
        reason = "needs chromium (scripts/install-system-deps --test)"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test must run under CI: {reason}")
    pytest.skip(reason)


def _report() -> Report:
    """The realistic evening plus a peer whose PTR names hold markup and script."""
    dump = realistic_snapshot()
    hostile = peer("fd77:3::66", 66, HOSTILE_NAMES)
    return aggregate(snapshot((*dump.peers, hostile), device=dump.device, name=dump.name))


def _write(tmp_path: Path, report: Report) -> Path:
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    return page


def _group_order(dom: Page) -> list[str]:
    return [body.attrs["data-key"] for body in dom.find("tbody")]


def test_the_browser_shows_the_totals_every_row_and_no_planted_markup(
        browser: None, tmp_path: Path) -> None:
    report = _report()
    dom = parse(dump_dom(_write(tmp_path, report), tmp_path / "profile"))
    (table,) = dom.find("table", id="groups")
    assert table.attrs["data-script"] == "ready" and table.attrs["data-sorted"] == "none"
    dump = report.snapshot
    for name in TOTAL_FIELDS:
        (shown,) = dom.find("dd", data_total=name)
        if dump.totals[name] is None:
            assert shown.text.startswith("unknown")
        else:
            assert int(shown.attrs["data-value"]) == dump.totals[name]
    (peers,) = dom.find("dd", data_report_total="peers")
    assert int(peers.attrs["data-value"]) == len(dump.peers) == 44 + 1
    (packets,) = dom.find("dd", data_report_total="packets")
    assert int(packets.attrs["data-value"]) == sum(p.packets or 0 for p in dump.peers)
    assert _group_order(dom) == [group.key for group in report.groups]
    addresses = [e.text for e in dom.find("span", **{"class": "addr"})]
    assert sorted(addresses) == sorted(p.address for p in dump.peers)
    # The browser parsed the hostile names as text: no element came from them.
    assert len(dom.find("script")) == 1 and dom.find("img") == []
    assert len(dom.find("svg")) == 2
    assert not [a for e in dom.elements for a in e.attrs if a.startswith("on")]
    assert all(name in "".join(dom.texts) for name in HOSTILE_NAMES)


@pytest.mark.parametrize("key, direction", [("bytes", "ascending"), ("label", "ascending"),
                                            ("peers", "descending")])
def test_the_sort_script_orders_groups_by_a_column(
        browser: None, tmp_path: Path, key: str, direction: str) -> None:
    report = _report()
    dom = parse(dump_dom(_write(tmp_path, report), tmp_path / "profile",
                         f"#sort={key}-{direction}"))
    (table,) = dom.find("table", id="groups")
    assert table.attrs["data-sorted"] == f"{key}-{direction}"
    (head,) = dom.find("th", data_key=key)
    assert head.attrs["aria-sort"] == direction
    values = [int(row.attrs["data-value"]) for row in _first_cells(dom, key)]
    assert values == sorted(values, reverse=direction == "descending")
    assert len(values) == report.totals.groups


_COLUMNS = ("label", "hits", "bandwidth", "peers", "packets", "bytes", "last")


def _first_cells(dom: Page, key: str) -> list[Element]:
    """Each group row's cell in column key, in document order."""
    column = _COLUMNS.index(key)
    cells = []
    in_group_row, seen = False, 0
    for element in dom.elements:
        if element.tag == "tr":
            in_group_row, seen = element.attrs.get("class") == "group", 0
        elif element.tag == "td" and in_group_row:
            if seen == column:
                cells.append(element)
            seen += 1
    return cells


def test_screenshots_on_a_laptop_and_a_phone(browser: None, tmp_path: Path) -> None:
    page = _write(tmp_path, _report())
    for png, (width, height) in ((tmp_path / "report.png", DESKTOP),
                                 (tmp_path / "report-phone.png", PHONE)):
        screenshot(page, tmp_path / "profile", png, width, height)
        assert png_size(png) == (width, height)
        assert png.stat().st_size > 20_000  # a blank page is a few kB
