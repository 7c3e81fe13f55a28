"""A View into screen lines (rich Text) or plain text (--batch). Pure.

The screen fits the terminal: the least needed columns go first when the
width is short (names, since, idle, in/out, ... down to the 10-second rate,
the sort key), the label column takes what is left, and the table gets the
lines the height leaves; below what the 10-second rate needs, one line says
how wide (or high) the terminal must be. Every header line fits 80 columns
whatever the figures (SI-scaled, at most 5 characters each).

--batch writes the same header with exact integers and every column, every
snapshot alike for a given --by, built as plain strings (no rich table: a
snapshot of 100 000 rows takes a fraction of a second, not minutes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rich.console import Group, RenderableType
from rich.text import Text

from ncebpf.top.view import Counter, View

HEADER_LINES = 5
FOOTER_LINES = 1
HELP = "s sort  b group  / filter  p pause  q quit"
GROWING = "bold red"  # a counter of frames under no peer that grew in the last 10 s
# "255.255.255.255/24" is 18, "ffff:ffff:ffff::/48" 19; the longest IPv6 text is 39.
LABEL_MIN, LABEL_MAX = 19, 41
STALE = "-"  # a rate while the instance does not answer
# The header's counters, by line: those that mean loss first.
COUNTER_LINES = (("overflow", "dropped", "unattributed"), ("filtered_out", "unparsed"))
NOUNS = {"peer": ("peer", "peers"), "cidr": ("prefix", "prefixes"),
         "domain": ("domain", "domains")}


@dataclass(frozen=True)
class _Column:
    heading: str
    width: int  # on the screen
    drop: int  # higher goes first when the width is short; 0 never


# In order, after the label column. Rates are bytes/s; an SI figure is at most 5 characters.
_COLUMNS = (
    _Column("2s", 5, 2), _Column("10s", 5, 0), _Column("40s", 5, 3),
    _Column("total", 5, 4), _Column("pkt/s", 5, 5), _Column("in", 5, 6),
    _Column("out", 5, 6), _Column("peers", 5, 5), _Column("idle", 4, 7),
    _Column("since", 5, 8), _Column("names", 12, 9),
)
_GAP = 2  # between two columns on the screen; 1 after the label (the figures align right)
_RATES = ("2s", "10s", "40s", "pkt/s", "in", "out")


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


def cut(text: str, width: int) -> str:
    """text in at most width characters: cut in the middle with `…`, keeping more of the
    tail (what tells apart the hosts of one IPv6 prefix: `fd77:12…:5678:9abc`)."""
    if len(text) <= width:
        return text
    if width < 2:
        return text[:width]
    head = min(width - 1, (width - 1) * 2 // 5 + 1)
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def _shown_columns(view: View) -> list[_Column]:
    grouped = view.options.by != "peer"
    return [c for c in _COLUMNS if (grouped or c.heading != "peers")
            and (c.heading != "names" or any(view.lines.names))]


def layout(view: View, width: int) -> tuple[list[_Column], int] | int:
    """The columns that fit in width and the label column's width; or, when not even the
    10-second rate fits, the width needed (an int)."""
    columns = _shown_columns(view)
    longest = max((len(label) for label in view.lines.labels), default=0)
    heading = NOUNS[view.options.by][0]
    label = min(LABEL_MAX, max(longest, len(heading)))
    floor = min(label, LABEL_MIN)  # a longer label is cut in the middle

    def needed(cols: list[_Column]) -> int:
        return floor + sum(c.width + _GAP for c in cols) - (_GAP - 1)
    while needed(columns) > width and any(c.drop for c in columns):
        worst = max(c.drop for c in columns)
        columns = [c for c in columns if c.drop != worst]
    if needed(columns) > width:
        return needed(columns)
    spare = width - needed(columns)
    names = any(c.heading == "names" for c in columns)
    label_width = min(label, floor + spare)
    if names:  # the names take the rest
        columns[-1] = _Column("names", columns[-1].width + spare - (label_width - floor), 9)
    return columns, label_width


_Piece = tuple[str, "str | None", bool]  # text, style, whether it may be cut at the edge
_SEP: _Piece = ("  ", None, False)


def _header_parts(view: View, exact: bool) -> list[list[_Piece]]:
    """The lines above the table as pieces, separators included: the instance, the rates,
    the counters (those that mean loss first), the view."""
    h = view.header
    stale = view.stale and not exact

    def rate(value: float) -> str:
        return STALE if stale else si(value, exact)

    def count(value: float) -> str:
        return si(value, exact)
    clock = time.strftime("%H:%M:%S", time.localtime(h.time)) if h.time else "--:--:--"
    first: list[_Piece] = [(f"ncebpf {h.name}: {h.device} ({h.mode})", None, True), _SEP,
                           (f"drained {clock}", None, False)]
    if h.filter:
        first += [_SEP, (f"filter: {h.filter}", None, True)]
    fill = 100.0 * h.peers / h.capacity if h.capacity else 0.0
    second: list[_Piece] = [(f"frames/s {rate(view.frame_rate)}", None, False), _SEP]
    for at, (window, bytes_rate) in enumerate(zip(("2s", "10s", "40s"), view.byte_rates,
                                                  strict=True)):
        second += [(f"{'bytes/s ' if at == 0 else ' '}{window} {rate(bytes_rate)}", None,
                    False)]
    second += [_SEP, (f"peers {count(h.peers)}/{count(h.capacity)} ({fill:.1f}%)", None,
                      False)]
    by_name = {c.name: c for c in view.counters}
    counter_lines: list[list[_Piece]] = []
    for names in COUNTER_LINES:
        pieces: list[_Piece] = []
        for name in names:
            counter = by_name.get(name, Counter(name, None, 0))
            if pieces:
                pieces.append(_SEP)
            value = "?" if counter.value is None else count(counter.value)
            if counter.growth > 0:
                pieces.append((f"{name} {value} +{count(counter.growth)}", GROWING, False))
            else:
                pieces.append((f"{name} {value}", None, False))
        counter_lines.append(pieces)
    options = view.options
    noun = NOUNS[options.by][0 if view.matching == 1 else 1]
    status = f"sort {options.sort}  by {options.by}  {view.matching} {noun}"
    if options.search:
        status += f" matching {options.search}"
    if options.paused:
        status += "  PAUSED"
    if view.note:  # first when it says the figures are not live
        status = f"{view.note}  {status}" if view.stale else f"{status}  {view.note}"
    return [first, second, *counter_lines, [(status, None, True)]]


def header(view: View, exact: bool = False, width: int | None = None) -> list[Text]:
    """The HEADER_LINES lines above the table, each within width (None: as long as they
    are). A figure is never cut: what does not fit whole is left out, from the end of its
    line, and `…` says so; only text (the instance, the filter, the status) is cut."""
    lines = []
    for pieces in _header_parts(view, exact):
        text = Text(no_wrap=True, overflow="ellipsis")
        for at, (piece, style, cuttable) in enumerate(pieces):
            room = None if width is None else width - text.cell_len
            if room is not None and len(piece) > room:
                if cuttable:
                    text.append(cut(piece, room), style=style)
                elif at and room >= 2 and pieces[at - 1] is not _SEP:
                    text.append(" …")
                elif room >= 1:
                    text.append("…")
                break
            text.append(piece, style=style)
        lines.append(text)
    return lines


def _cells(view: View, columns: Sequence[_Column]) -> list[list[str]]:
    """The screen's cells, SI-scaled, one list per shown line (label first)."""
    lines, now = view.lines, view.header.time
    rows = []
    for line in lines:
        values = {
            "2s": si(line.rates[0]), "10s": si(line.rates[1]), "40s": si(line.rates[2]),
            "total": si(line.bytes), "pkt/s": si(line.packet_rate), "in": si(line.in_rate),
            "out": si(line.out_rate), "peers": si(line.peers),
            "idle": age(now - line.last_seen), "since": age(now - line.first_seen),
            "names": line.names,
        }
        if view.stale:
            values.update(dict.fromkeys(_RATES, STALE))
        rows.append([line.label, *(values[c.heading] for c in columns)])
    return rows


def table(view: View, width: int) -> list[Text]:
    """The heading and the lines of the table, each at most width characters; or one line
    saying how wide the terminal must be."""
    fitted = layout(view, width)
    if isinstance(fitted, int):
        return [Text(f"terminal too narrow: {fitted} columns needed")]
    columns, label_width = fitted
    gap = " " * _GAP

    def line(cells: list[str]) -> str:
        out = [cut(cells[0], label_width).ljust(label_width)]
        for column, cell in zip(columns, cells[1:], strict=True):
            if column.heading == "names":
                out.append(cut(cell, column.width) if len(cell) > column.width else cell)
            else:
                out.append(cell.rjust(column.width))
        return (out[0] + " " + gap.join(out[1:])).rstrip()
    heading = [NOUNS[view.options.by][0], *(c.heading for c in columns)]
    # Text, not markup: names come from DNS (`[blink]`), addresses hold `:1234:`.
    return [Text(line(heading), style="bold", no_wrap=True, overflow="crop"),
            *(Text(line(cells), no_wrap=True, overflow="crop")
              for cells in _cells(view, columns))]


def screen(view: View, width: int, height: int) -> RenderableType:
    """Everything on a width x height terminal: header, table, help line."""
    needed = HEADER_LINES + 2 + FOOTER_LINES
    if height < needed:
        return Text(f"terminal too short: {needed} lines needed")
    if isinstance(layout(view, width), int):
        return table(view, width)[0]
    body = table(view, width)
    blank = table_lines(height) + 1 - len(body)
    return Group(*header(view, width=width), *body, *([Text("")] * max(0, blank)),
                 Text(HELP, no_wrap=True, overflow="ellipsis", style="reverse"))


def _integers(values: npt.NDArray[np.float64]) -> list[str]:
    return [str(v) for v in np.rint(values).astype(np.int64).tolist()]


def batch_text(view: View) -> str:
    """One --batch snapshot as text: the header lines with exact integers, the column
    headings, one line per row with every column (the same for every snapshot of a --by:
    label 2s 10s 40s total pkt/s in out peers idle since names), then an empty line.
    Fields hold no spaces: a label's are written `_`, names are `,`-joined, `-` for none."""
    lines = view.lines
    now = view.header.time
    columns = [
        [label.replace(" ", "_") for label in lines.labels],
        *(_integers(lines.rates[:, i]) for i in range(3)),
        _integers(lines.bytes), _integers(lines.packet_rate), _integers(lines.in_rate),
        _integers(lines.out_rate), [str(p) for p in lines.peers.tolist()],
        _integers(np.maximum(0.0, now - lines.last_seen)),
        _integers(np.maximum(0.0, now - lines.first_seen)),
    ]
    headings = [NOUNS[view.options.by][0], "2s", "10s", "40s", "total", "pkt/s", "in", "out",
                "peers", "idle", "since"]
    widths = [max(len(h), *(len(c) for c in cells)) if cells else len(h)
              for h, cells in zip(headings, columns, strict=True)]
    names = [",".join(n.replace(" ", "_") for n in text.split(", ")) if text else "-"
             for text in lines.names]
    # Padded a column at a time (str methods over lists), joined a row at a time.
    padded = [[cell.ljust(widths[0]) for cell in columns[0]],
              *([cell.rjust(width) for cell in cells]
                for width, cells in zip(widths[1:], columns[1:], strict=True)), names]
    out = ["".join(text for text, _, _ in pieces) for pieces in _header_parts(view, True)]
    out.append(" ".join([headings[0].ljust(widths[0]),
                         *(h.rjust(w) for h, w in zip(headings[1:], widths[1:], strict=True)),
                         "names"]))
    out.extend(map(" ".join, zip(*padded, strict=True)))
    out.append("")
    return "\n".join(out) + "\n"
