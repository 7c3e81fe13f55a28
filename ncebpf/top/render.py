"""A View into a rich renderable (the screen) or plain text (--batch). Pure.

The screen fits any terminal from 80x24 up: the least needed columns go
first when the width is short (names, then first/last seen, in/out, ...),
the peer column takes what is left, and the table gets the lines the
height leaves. --batch writes the same table with exact figures (whole
bytes/s, seconds) and every column, for scripts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ncebpf.top.view import View

HEADER_LINES = 4
FOOTER_LINES = 1
HELP = "s sort  b group  / filter  p pause  q quit"
GROWING = "bold red"  # a counter of frames under no peer that grew in the last 10 s
PEER_MIN, PEER_MAX = 18, 41  # "255.255.255.255/24"; the longest IPv6 text is 39


@dataclass(frozen=True)
class _Column:
    heading: str
    width: int  # on the screen
    drop: int  # higher goes first when the width is short; 0 never


# In order on the screen, after the peer column. Rates are bytes/s.
_COLUMNS = (
    _Column("2s", 6, 0), _Column("10s", 6, 0), _Column("40s", 6, 0),
    _Column("total", 6, 1), _Column("pkt/s", 6, 2), _Column("in", 6, 3),
    _Column("out", 6, 3), _Column("peers", 5, 2), _Column("idle", 4, 4),
    _Column("since", 5, 5), _Column("names", 12, 6),
)
_GAP = 2  # between two columns


def table_lines(height: int) -> int:
    """How many lines of peers a screen of this height shows."""
    return max(1, height - HEADER_LINES - FOOTER_LINES - 1)


def si(value: float, exact: bool = False) -> str:
    """A count or a rate in at most 5 characters with an SI prefix: 999, 1.02k, 12.3M;
    exact: the whole number."""
    if exact:
        return str(round(value))
    if value < 999.5:
        return f"{value:.0f}"
    for prefix in "kMGTPE":
        value /= 1000
        if value < 9.995:
            return f"{value:.2f}{prefix}"
        if value < 99.95:
            return f"{value:.1f}{prefix}"
        if value < 999.5:
            return f"{value:.0f}{prefix}"
    return f"{value:.0f}Z"


def age(seconds: float, exact: bool = False) -> str:
    """A duration as 42s, 5m, 3h, 2d; exact: whole seconds."""
    seconds = max(0.0, seconds)
    if exact:
        return str(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _columns(view: View, width: int, exact: bool) -> tuple[list[_Column], int]:
    """The columns that fit in width, and the peer column's width."""
    grouped = view.options.by != "peer"
    columns = [c for c in _COLUMNS if grouped or c.heading != "peers"]
    if not any(line.names for line in view.lines):  # groups have none
        columns = [c for c in columns if c.heading != "names"]
    if exact:
        return columns, PEER_MAX

    def needed(cols: list[_Column]) -> int:
        return PEER_MIN + sum(c.width + _GAP for c in cols)
    while needed(columns) > width and any(c.drop for c in columns):
        worst = max(c.drop for c in columns)
        columns = [c for c in columns if c.drop != worst]
    spare = width - needed(columns)
    names = next((c for c in columns if c.heading == "names"), None)
    peer = min(PEER_MAX, PEER_MIN + max(0, spare))
    if names is not None:  # the names take what the peer column does not
        peer = min(peer, max(PEER_MIN, max(len(line.label) for line in view.lines)
                             if view.lines else PEER_MIN))
    return columns, peer


def _cells(view: View, columns: list[_Column], exact: bool) -> list[list[str]]:
    rows = []
    for line in view.lines:
        values = {
            "2s": si(line.rates[0], exact), "10s": si(line.rates[1], exact),
            "40s": si(line.rates[2], exact), "total": si(line.bytes, exact),
            "pkt/s": si(line.packet_rate, exact), "in": si(line.in_rate, exact),
            "out": si(line.out_rate, exact), "peers": str(line.peers),
            "idle": age(view.header.time - line.last_seen, exact),
            "since": age(view.header.time - line.first_seen, exact), "names": line.names,
        }
        rows.append([line.label, *(values[c.heading] for c in columns)])
    return rows


def header(view: View, exact: bool = False) -> list[Text]:
    """The lines above the table: the instance, the rates, the counters, the view."""
    h = view.header
    what = f"ncebpf {h.name}: {h.device} ({h.mode})"
    if h.filter:
        what += f" filter: {h.filter}"
    clock = time.strftime("%H:%M:%S", time.localtime(h.time)) if h.time else "--:--:--"
    first = Text(f"{what}  drained {clock}", no_wrap=True, overflow="ellipsis")
    fill = 100.0 * h.peers / h.capacity if h.capacity else 0.0
    rates = " ".join(f"{w} {si(r, exact)}" for w, r in zip(("2s", "10s", "40s"),
                                                           view.byte_rates, strict=True))
    second = Text(f"frames/s {si(view.frame_rate, exact)}  bytes/s {rates}  peers "
                  f"{h.peers:,}/{h.capacity:,} ({fill:.1f}%)", no_wrap=True,
                  overflow="ellipsis")
    third = Text(no_wrap=True, overflow="ellipsis")
    for counter in view.counters:
        if third:
            third.append("  ")
        value = "?" if counter.value is None else str(counter.value)
        if counter.growth > 0:
            third.append(f"{counter.name} {value} +{counter.growth}", style=GROWING)
        else:
            third.append(f"{counter.name} {value}")
    options = view.options
    noun = {"peer": "peers", "cidr": "prefixes", "domain": "domains"}[options.by]
    status = f"sort {options.sort}  by {options.by}  {view.matching} {noun}"
    if options.search:
        status += f" matching {options.search!r}"
    if options.paused:
        status += "  PAUSED"
    if view.note:
        status += f"  {view.note}"
    return [first, second, third, Text(status, no_wrap=True, overflow="ellipsis")]


def table(view: View, width: int, exact: bool = False) -> Table:
    """The peers (or groups) as a table width columns wide."""
    columns, peer_width = _columns(view, width, exact)
    grid = Table(box=None, pad_edge=False, padding=(0, _GAP // 2), show_edge=False,
                 expand=False, header_style="bold")
    label = {"peer": "peer", "cidr": "prefix", "domain": "domain"}[view.options.by]
    grid.add_column(label, width=None if exact else peer_width, no_wrap=True,
                    overflow="ellipsis", min_width=None if exact else peer_width)
    for column in columns:
        if column.heading == "names":
            grid.add_column("names", no_wrap=True, overflow="ellipsis")
        else:
            grid.add_column(column.heading, justify="right", no_wrap=True,
                            min_width=None if exact else column.width)
    for cells in _cells(view, columns, exact):
        # Text, not str: a str cell is read as rich markup and emoji codes, and names come
        # from DNS (`[blink]`), addresses hold `:1234:` (an emoji's code).
        grid.add_row(*(Text(cell) for cell in cells))
    return grid


def screen(view: View, width: int, height: int) -> RenderableType:
    """Everything on a width x height terminal: header, table, help line."""
    body = table(view, width)
    blank = table_lines(height) - len(view.lines)
    return Group(*header(view), body, *([Text("")] * max(0, blank)),
                 Text(HELP, no_wrap=True, overflow="ellipsis", style="reverse"))


def batch(view: View) -> Group:
    """One --batch snapshot: the header and the whole table, exact figures."""
    return Group(*header(view, exact=True), table(view, 0, exact=True), Text(""))
