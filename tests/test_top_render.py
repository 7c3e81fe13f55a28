"""`ncebpf top`'s view model and rendering (ncebpf.top.view, ncebpf.top.render), and its keys:
pure, no root, no terminal."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from ncebpf.accounting import peer_key
from ncebpf.peerindex import key_array
from ncebpf.top import render
from ncebpf.top.rates import PeerRates, TotalRates
from ncebpf.top.screen import _Keyboard
from ncebpf.top.view import Counter, Labels, View, ViewOptions, build, counter_values
from ncebpf.top.wire import Header

PEERS = {  # address -> bytes/s in, bytes/s out, names
    "10.77.1.1": (50_000, 1_000, ["a.example.co.uk"]),
    "10.77.1.2": (20_000, 0, ["b.example.co.uk"]),
    "10.77.2.1": (60_000, 0, []),
    "fd77:1234:5678:9abc:def0:1234:5678:9abc": (12_000, 10_000, ["[blink]v6.example.net"]),
}


def header(time: float, frames: int, overflow: int = 0) -> Header:
    return Header(cursor="s:1", full=False, time=time, name="t", device="eth0", mode="tc",
                  filter="udp", peers=len(PEERS), capacity=1 << 20,
                  totals={"packets": frames, "bytes": frames * 100, "filtered_out": 3,
                          "unparsed": 0, "unattributed": 0, "overflow": overflow,
                          "dropped": None})


def feed(seconds: int = 5) -> tuple[PeerRates, TotalRates, Header]:
    """Every peer at its rate for `seconds` answers a second apart."""
    rates, totals = PeerRates(), TotalRates()
    keys = [peer_key(a) for a in PEERS]
    head = header(0, 0)
    for t in range(seconds + 1):
        counts = np.array([[t, t * i, t, t * o] for i, o, _ in PEERS.values()],
                          dtype=np.uint64)
        names = {at: n for at, (_, _, n) in enumerate(PEERS.values()) if n}
        rates.absorb(float(t), False, key_array(b"".join(keys)), counts,
                     np.zeros(len(keys), np.bool_), np.zeros(len(keys), np.uint32),
                     np.full(len(keys), t, np.uint32), names)
        head = header(float(t), 1000 * t, overflow=7 if t == seconds else 0)
        totals.add(float(t), counter_values(head))
    return rates, totals, head


def view_of(options: ViewOptions | None = None, limit: int = 50) -> View:
    rates, totals, head = feed()
    return build(rates, totals, head, Labels(rates), options or ViewOptions(), limit, now=5.0)


def text_of(renderable: object, width: int, height: int | None = None) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None,
                      force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_peers_come_busiest_first_with_their_rates_counts_and_names() -> None:
    view = view_of()
    assert [line.label for line in view.lines] == [
        "10.77.2.1", "10.77.1.1", "fd77:1234:5678:9abc:def0:1234:5678:9abc", "10.77.1.2"]
    busiest = view.lines[1]
    assert busiest.rates == (51_000.0, 51_000.0, 51_000.0)
    assert (busiest.in_rate, busiest.out_rate, busiest.packet_rate) == (50_000, 1_000, 2)
    assert (busiest.bytes, busiest.packets, busiest.names) == (255_000, 10, "a.example.co.uk")
    assert view.frame_rate == pytest.approx(1000 + 3 * 0 + 7 / 5)
    assert view.byte_rates[0] == pytest.approx(100_000)
    overflow = next(c for c in view.counters if c.name == "overflow")
    assert (overflow.value, overflow.growth) == (7, 7)
    assert next(c for c in view.counters if c.name == "dropped").value is None


def test_groups_are_the_reports_groups_with_their_members_summed() -> None:
    by_cidr = view_of(ViewOptions(by="cidr"))
    assert [(g.label, g.peers, g.rates[1]) for g in by_cidr.lines] == [
        ("10.77.1.0/24", 2, 71_000.0), ("10.77.2.0/24", 1, 60_000.0),
        ("fd77:1234:5678::/48", 1, 22_000.0)]
    by_domain = view_of(ViewOptions(by="domain"))
    assert [(g.label, g.peers) for g in by_domain.lines] == [
        ("example.co.uk", 2), ("(no name)", 1), ("example.net", 1)]


def test_the_filter_sort_and_limit() -> None:
    assert [line.label for line in view_of(ViewOptions(search="CO.UK")).lines] == [
        "10.77.1.1", "10.77.1.2"]
    one = view_of(ViewOptions(search="10.77.2"))
    assert [line.label for line in one.lines] == ["10.77.2.1"]
    assert render.header(one)[4].plain == "sort rate  by peer  1 peer matching 10.77.2"
    by_total = view_of(ViewOptions(sort="total"), limit=2)
    assert [line.label for line in by_total.lines] == ["10.77.2.1", "10.77.1.1"]
    by_packets = view_of(ViewOptions(sort="packets"))
    assert by_packets.lines[0].packet_rate == 2.0
    assert by_packets.matching == 4


@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (200, 50), (60, 15)])
def test_the_screen_fits_the_terminal(width: int, height: int) -> None:
    rates, totals, head = feed()
    view = build(rates, totals, head, Labels(rates), ViewOptions(),
                 render.table_lines(height), now=5.0)
    lines = text_of(render.screen(view, width, height), width).splitlines()
    assert len(lines) <= height
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("ncebpf t: eth0 (tc)  drained ")
    assert lines[-1].startswith("s sort")
    table = next(i for i, line in enumerate(lines) if line.startswith("peer"))
    assert lines[table + 1].split()[:4] == ["10.77.2.1", "60.0k", "60.0k", "60.0k"]
    if width >= 80:
        assert lines[table].split()[:7] == ["peer", "2s", "10s", "40s", "total", "pkt/s", "in"]
        assert lines[2].startswith("overflow 7 +7  dropped ?")


def test_batch_gives_exact_figures_and_the_same_columns_every_time() -> None:
    lines = render.batch_text(view_of(ViewOptions(by="peer"))).splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("peer"))
    assert lines[table].split() == ["peer", "2s", "10s", "40s", "total", "pkt/s", "in", "out",
                                    "peers", "idle", "since", "names"]
    assert lines[table + 2].split() == ["10.77.1.1", "51000", "51000", "51000", "255000", "2",
                                        "50000", "1000", "1", "0", "5", "a.example.co.uk"]
    assert lines[table + 1].split()[-1] == "-"  # no names: still a field
    # Never cut, never read as markup or emoji codes (`:1234:`).
    assert lines[table + 3].split()[0] == "fd77:1234:5678:9abc:def0:1234:5678:9abc"
    assert lines[table + 3].split()[-1] == "[blink]v6.example.net"
    assert lines[1] == ("frames/s 1001  bytes/s 2s 100000 10s 100000 40s 100000  "
                        "peers 4/1048576 (0.0%)")
    assert lines[-1] == ""
    grouped = render.batch_text(view_of(ViewOptions(by="domain"))).splitlines()
    rows = [line.split() for line in grouped[grouped.index(next(
        line for line in grouped if line.startswith("domain"))) + 1:-1]]
    assert [(r[0], r[8], r[-1]) for r in rows] == [
        ("example.co.uk", "2", "-"), ("(no_name)", "1", "-"), ("example.net", "1", "-")]
    assert all(len(r) == 12 for r in rows)


def test_no_colour_without_a_terminal_or_under_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = render.screen(view_of(), 80, 24)
    plain = Console(file=io.StringIO(), width=80)  # not a terminal
    plain.print(screen)
    assert "\x1b[" not in plain.file.getvalue()  # type: ignore[attr-defined]
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Console(file=io.StringIO(), width=80, force_terminal=True)
    terminal.print(screen)
    assert "\x1b[31m" not in terminal.file.getvalue()  # type: ignore[attr-defined]
    monkeypatch.delenv("NO_COLOR")
    coloured = Console(file=io.StringIO(), width=80, force_terminal=True)
    coloured.print(screen)
    assert "\x1b[1;31m" in coloured.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0"), (999, "999"), (1000, "1.00k"), (12_345, "12.3k"), (999_499, "999k"),
    (999_500, "1.00M"), (2.5e9, "2.50G")])
def test_si(value: float, shown: str) -> None:
    assert render.si(value) == shown
    assert render.si(value, exact=True) == str(round(value))


def test_ages() -> None:
    assert [render.age(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3)] == [
        "0s", "59s", "1m", "59m", "1h", "3d"]


def test_keys() -> None:
    keys = _Keyboard(ViewOptions())
    for key in "sb p":
        keys.press(key)
    assert (keys.options.sort, keys.options.by, keys.options.paused) == ("total", "cidr", False)
    for key in "/10.7x\x7f7\r":
        keys.press(key)
    assert keys.options.search == "10.77" and keys.typing is None
    keys.press("/")
    assert keys.note == "filter: _"  # a new filter
    keys.press("\x1b")
    assert keys.options.search == "10.77"  # Esc keeps the old one
    keys.press("q")
    assert keys.quit


def test_every_header_line_fits_80_columns_in_a_flood() -> None:
    view = view_of()
    huge = 9_876_543_210_987
    flood = replace(
        view, header=replace(view.header, peers=1 << 20, filter="udp and " * 20),
        frame_rate=huge, byte_rates=(huge, huge, huge),
        counters=tuple(Counter(c.name, huge, huge) for c in view.counters),
        options=ViewOptions(search="x" * 60, paused=True))
    lines = render.header(flood)
    plain = [line.plain for line in lines]
    assert all(len(line) <= 80 for line in plain[1:4]), plain
    assert plain[1].endswith("peers 1.05M/1.05M (100.0%)")
    assert plain[2] == "overflow 9.88T +9.88T  dropped 9.88T +9.88T  unattributed 9.88T +9.88T"
    assert plain[3] == "filtered_out 9.88T +9.88T  unparsed 9.88T +9.88T"
    assert " drained " in plain[0][:40]  # before the filter, which may be cut
    assert render.batch_text(flood).splitlines()[2].startswith(
        f"overflow {huge} +{huge}  dropped {huge} +{huge}")


def test_a_narrow_header_leaves_figures_out_whole_never_cut() -> None:
    view = view_of()
    rates = (610_000.0, 595_000.0, 588_000.0)
    narrow = replace(view, byte_rates=rates, frame_rate=1370.0,
                     header=replace(view.header, filter="udp and host 10.77.1.1"))
    plain = [line.plain for line in render.header(narrow, width=40)]
    assert all(len(line) <= 40 for line in plain), plain
    assert plain[1] == "frames/s 1.37k  bytes/s 2s 610k 10s 595k", plain[1]  # 40: no room
    assert render.header(narrow, width=42)[1].plain == \
        "frames/s 1.37k  bytes/s 2s 610k 10s 595k …"
    assert render.header(narrow, width=30)[1].plain == "frames/s 1.37k  …"
    assert "drained" in plain[0]
    assert " 40s 588k  peers " in render.header(narrow, width=200)[1].plain


@pytest.mark.parametrize(("width", "last"), [(80, "since"), (73, "idle"), (60, "pkt/s"),
                                             (40, "40s"), (33, "10s"), (25, "10s"), (24, None)])
def test_columns_go_down_to_the_10s_rate_then_the_screen_says_it_is_too_narrow(
        width: int, last: str | None) -> None:
    rates, totals, head = feed()
    view = build(rates, totals, head, Labels(rates), ViewOptions(), 10, now=5.0)
    lines = text_of(render.screen(view, width, 24), width).splitlines()
    if last is None:
        assert lines == [f"terminal too narrow: {19 + 6} columns needed"[:width],
                         f"terminal too narrow: {19 + 6} columns needed"[width:].strip()]
        return
    headings = lines[render.HEADER_LINES].split()
    assert headings[-1] == last and "10s" in headings
    # No figure is cut: every cell is whole (SI-scaled, at most 5 characters).
    row = lines[render.HEADER_LINES + 1].split()
    assert row[0] == "10.77.2.1" and set(row[1:4]) <= {"60.0k", "0", "1.00k", "0s", "5s"}
    assert all(len(line) <= width for line in lines)
    assert text_of(render.screen(view, 80, 7), 80).splitlines() == [
        "terminal too short: 8 lines needed"]
    assert " ".join(text_of(render.screen(view, 20, 5), 20).split()) == \
        "terminal too short: 8 lines needed"


def test_grouped_views_keep_in_out_and_idle_at_80_columns() -> None:
    for by in ("cidr", "domain"):
        rates, totals, head = feed()
        view = build(rates, totals, head, Labels(rates), ViewOptions(by=by), 10, now=5.0)
        lines = text_of(render.screen(view, 80, 24), 80).splitlines()
        headings = lines[render.HEADER_LINES].split()
        assert headings[1:] == ["2s", "10s", "40s", "total", "pkt/s", "in", "out", "peers",
                                "idle"], (by, lines)
        assert all(len(line) <= 80 for line in lines)


def test_a_long_label_is_cut_in_the_middle_keeping_its_tail() -> None:
    assert render.cut("fd77:1234:5678:9abc:def0:1234:5678:9abc", 18) == "fd77:12…:5678:9abc"
    assert render.cut("10.77.5.39", 18) == "10.77.5.39"
    lines = text_of(render.screen(view_of(), 80, 24), 80)
    assert "fd77:123…:5678:9abc " in lines
