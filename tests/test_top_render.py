"""`ncebpf top`'s view model and rendering (ncebpf.top.view, ncebpf.top.render), and its keys:
pure, no root, no terminal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from ncebpf.accounting import peer_key
from ncebpf.peerindex import key_array
from ncebpf.top import render
from ncebpf.top.rates import PeerRates, TotalRates
from ncebpf.top.screen import _Keyboard
from ncebpf.top.view import Labels, View, ViewOptions, build, counter_values
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
    assert [line.label for line in view_of(ViewOptions(search="10.77.2")).lines] == [
        "10.77.2.1"]
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
    assert lines[0].startswith("ncebpf t: eth0 (tc) filter: udp")
    assert lines[-1].startswith("s sort")
    table = next(i for i, line in enumerate(lines) if line.startswith("peer"))
    assert lines[table + 1].split()[:4] == ["10.77.2.1", "60.0k", "60.0k", "60.0k"]
    if width >= 80:
        assert lines[table].split()[:7] == ["peer", "2s", "10s", "40s", "total", "pkt/s", "in"]
        assert "overflow 7 +7" in lines[2]


def test_batch_gives_exact_figures_and_every_column() -> None:
    text = text_of(render.batch(view_of(ViewOptions(by="peer"))), 250)
    lines = text.splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("peer"))
    assert lines[table].split() == ["peer", "2s", "10s", "40s", "total", "pkt/s", "in", "out",
                                    "idle", "since", "names"]
    assert lines[table + 2].split() == ["10.77.1.1", "51000", "51000", "51000", "255000", "2",
                                        "50000", "1000", "0", "5", "a.example.co.uk"]
    # Never cut, never read as markup or emoji codes (`:1234:`).
    assert "fd77:1234:5678:9abc:def0:1234:5678:9abc" in text
    assert "[blink]v6.example.net" in text
    assert "frames/s 1001  bytes/s 2s 100000" in lines[1]


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
    assert keys.note == "filter: 10.77_"
    keys.press("\x1b")
    assert keys.options.search == ""
    keys.press("q")
    assert keys.quit
