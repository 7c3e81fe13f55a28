"""The report as one self-contained HTML page: summary, two charts, the full table. Pure.

Everything the page needs is inside it — CSS, the charts as inline SVG, the
short sort script — so it can be mailed, saved or served as it is, and no
request leaves it. It reads on a laptop and on a phone (the charts scale
through their viewBox; the table scrolls sideways on narrow screens).

Peer names come from the wire and from DNS, where a PTR may hold any byte:
the template is jinja2 with autoescape on, and the charts are pygal's
(its XML writer escapes text), so a name with markup shows as text.

The numbers are the text report's (spec §11.3): hits per minute R/60,
bytes per second W/3600, a group's last contact its latest E. Every number
is shown with thousands separators and carried exactly in `data-value`,
so the sort script and tests read integers, not display text.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import jinja2
import pygal
from markupsafe import Markup, escape
from pygal.style import Style

from ncebpf.report.aggregate import address_order
from ncebpf.report.model import TOTAL_FIELDS, Group, Peer, Report, Snapshot, TimeSeries
from ncebpf.report.render_text import title

CHART_TOP = 10  # bars per chart: the groups and the peers with the most bytes/s
# Above this many peers a group's member rows start hidden (a checkbox per group shows
# them): laying out 100 000 table rows keeps a browser busy for over a minute.
MEMBERS_SHOWN_UP_TO = 2000
_CHART_STYLE = Style(
    # Transparent and mid-grey: the same SVG reads on the page's light and dark schemes.
    background="transparent", plot_background="transparent", foreground="#888",
    foreground_strong="#888", foreground_subtle="#8884", guide_stroke_color="#8888",
    major_guide_stroke_color="#888", opacity=".85",
    opacity_hover="1", colors=("#3a7bd5",),
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=12, major_label_font_size=12, title_font_size=15)


@lru_cache(maxsize=65536)  # peers drained together share their E: one strftime each
def local_time(epoch: int) -> str:
    """Local time as `2026-11-30 22:41:07` (ISO 8601 order, readable)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def iso_time(epoch: int) -> str:
    """Local time with its UTC offset, for `<time datetime>` (`2026-11-30T22:41:07+0000`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


def per_minute(hits_per_hour: float) -> int:
    """R as reports show it (spec §11.3): hits per minute, rounded."""
    return round(hits_per_hour / 60)


def per_second(bytes_per_hour: float) -> int:
    """W as reports show it (spec §11.3): bytes per second, rounded."""
    return round(bytes_per_hour / 3600)


def grouped(number: int) -> str:
    """12345678 → `12,345,678`: thousands separators for reading."""
    return f"{number:,}"


def _axis_number(value: float) -> str:
    """A chart's axis tick: whole numbers grouped, a fraction (small scales) to one place."""
    return f"{int(value):,}" if value == int(value) else f"{value:,.1f}"


@dataclass(frozen=True, slots=True)
class TotalLine:
    """One line of the dump's totals: a count, or None with why it is unknown."""

    name: str
    value: int | None
    reason: str


def _dump_totals(report: Report) -> list[TotalLine]:
    snapshot = report.snapshot
    lines = [TotalLine(name, snapshot.totals[name], snapshot.unknown.get(name, ""))
             for name in TOTAL_FIELDS if name in snapshot.totals]
    lines += [TotalLine(f"others {name}", value, "")
              for name, value in snapshot.others.items() if value]
    return lines


def _short(label: str, width: int = 28) -> str:
    """A chart label cut to width characters (the table below has it whole)."""
    return label if len(label) <= width else label[:width - 1] + "…"


def _peer_label(peer: Peer) -> str:
    return f"{peer.address} {peer.N[0]}" if peer.N else peer.address


def _without_scripts(svg: Any) -> Any:
    """pygal's XML filter: drop the chart's scripts and comments.

    With js=[] pygal still writes an inline script holding its config (the
    labels among it) for the tooltip script it no longer loads: dead code
    that would carry names from DNS into a script element. Its comments
    name its web site; the page mentions no URL.
    """
    for parent in svg.iter():
        for child in list(parent):
            # ElementTree gives comments a function, not a string, as their tag.
            if child.tag == "script" or not isinstance(child.tag, str):
                parent.remove(child)
    return svg


def _bar_chart(chart_id: str, chart_title: str, bars: list[tuple[str, int]]) -> str:
    """A horizontal bar chart as inline SVG: no script, no size, nothing fetched.

    chart_id names it in the page (its CSS is scoped by it), so the page is
    the same for the same report.
    """
    chart = pygal.HorizontalBar(
        style=_CHART_STYLE, js=[], disable_xml_declaration=True, explicit_size=False,
        width=520, height=max(140, 60 + 28 * len(bars)), show_legend=False,
        title=chart_title, value_formatter=_axis_number, margin=6,
        print_values=False, max_scale=5)  # a few ticks: long labels leave the axis narrow
    chart.uuid = chart_id  # pygal's default is a random uuid4
    chart.add_xml_filter(_without_scripts)
    # pygal draws the first bar at the bottom: reversed, the biggest is on top.
    chart.x_labels = [_short(label) for label, _ in reversed(bars)]
    chart.add("bytes/s", [value for _, value in reversed(bars)])
    svg: str = chart.render(is_unicode=True)
    return svg


_POINT_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _time_chart(series: TimeSeries) -> str:
    """Bytes/s over a history report's range: the total and the busiest groups, as an
    inline SVG line chart (no script, nothing fetched)."""
    unit, per = next((name, seconds) for name, seconds in _POINT_UNITS
                     if series.width % seconds == 0)
    points = f"{series.width // per}-{unit}"
    left_out = f"; {series.left_out} busier group{'s' * (series.left_out > 1)} of many " \
        "peers not drawn" if series.left_out else ""
    chart = pygal.DateTimeLine(
        style=_CHART_STYLE, js=[], disable_xml_declaration=True, explicit_size=False,
        width=1040, height=320, title=f"Bytes/s over time ({points} points{left_out})",
        value_formatter=_axis_number, margin=6, show_dots=False,
        x_value_formatter=lambda moment: moment.strftime(
            "%b %d %H:%M" if series.width % 60 == 0 else "%H:%M:%S"),
        x_label_rotation=20, truncate_legend=28, legend_at_bottom=True)
    chart.uuid = "over-time"
    chart.add_xml_filter(_without_scripts)
    moments = [datetime.datetime.fromtimestamp(start) for start in series.starts]
    chart.add("all peers", list(zip(moments, series.total, strict=True)))
    for label, values in series.groups:
        chart.add(_short(label), list(zip(moments, values, strict=True)))
    svg: str = chart.render(is_unicode=True)
    return svg


def _charts(report: Report) -> list[str]:
    """Top groups and top peers by bandwidth (bytes/s), biggest first."""
    if not report.snapshot.peers:
        return []
    groups = sorted(report.groups, key=lambda g: -g.W)[:CHART_TOP]
    peers = sorted(report.snapshot.peers, key=lambda p: -p.W)[:CHART_TOP]
    charts = [_bar_chart("top-groups", f"Top {len(groups)} groups by bandwidth (bytes/s)",
                         [(g.label, per_second(g.W)) for g in groups])] if groups else []
    return charts + [_bar_chart(
        "top-peers", f"Top {len(peers)} peers by bandwidth (bytes/s)",
        [(_peer_label(p), per_second(p.W)) for p in peers])]


def _exact(value: int | None, cell_class: str = "") -> str:
    """A count's cell: grouped for reading, exact in data-value; `—` when the dump lacks it."""
    classes = " ".join(c for c in (cell_class, "unknown" if value is None else "") if c)
    attribute = f' class="{classes}"' if classes else ""
    if value is None:
        return f'<td{attribute} data-value="-1" title="not in this dump">—</td>'
    return f'<td{attribute} data-value="{value}">{value:,}</td>'


def _member_rows(group: Group) -> Markup:
    """A group's peers as table rows (address, names, rates, exact counts, last contact).

    Built here rather than in the template: a report of 100 000 peers has
    100 000 of these rows, and a template macro per cell costs seconds.
    Address and names are escaped; everything else is a number.
    """
    rows = []
    for peer in group.members:
        names = "".join(f"<span>{escape(name)}</span>" for name in peer.N)
        rows.append(
            f'<tr class="member"><td class="who"><span class="addr">{escape(peer.address)}'
            f'</span> <span class="names">{names}</span></td>'
            f"<td>{per_minute(peer.R):,}</td><td>{per_second(peer.W):,}</td><td></td>"
            f"{_exact(peer.packets)}{_exact(peer.bytes)}"
            f'<td data-value="{peer.E}">{local_time(peer.E)}</td></tr>\n')
    return Markup("".join(rows))


_SOA_MARK = ('<span class="soa" title="named after the SOA of an NXDOMAIN answer: these '
             'peers have no name of their own">SOA</span>')


def _when(epoch: int) -> str:
    return (f'<time datetime="{iso_time(epoch)}" title="epoch {epoch}">{local_time(epoch)}'
            "</time>")


def _group_row(group: Group, rank: int, by: str, members_shown: bool) -> str:
    """A group's own row: label (a checkbox showing its peers; by peer, the peer's names),
    hits/min, bytes/s, peers, exact counts, last contact; each sortable by data-value.
    Built here for the reason _member_rows is."""
    label = escape(group.label)
    if by == "peer":
        names = "".join(f"<span>{escape(name)}</span>" for name in group.members[0].N)
        first = f'<span class="addr">{label}</span> <span class="names">{names}</span>'
    else:
        first = (f'<input type="checkbox" class="members" aria-label="show the peers of {label}"'
                 f' title="show or hide its peers"{" checked" if members_shown else ""}> '
                 f"{label}")
    hits, rate, peers = per_minute(group.R), per_second(group.W), len(group.members)
    return (f'<tr class="group">\n<td data-value="{rank}">{first}'
            f'{_SOA_MARK if group.soa else ""}</td>\n'
            f'<td class="num" data-value="{hits}">{hits:,}</td>\n'
            f'<td class="num" data-value="{rate}">{rate:,}</td>\n'
            f'<td class="num" data-value="{peers}">{peers:,}</td>\n'
            f"{_exact(group.packets, 'num')}\n{_exact(group.bytes, 'num')}\n"
            f'<td data-value="{group.E}">{_when(group.E)}</td>\n</tr>\n')


def _label_rank(report: Report) -> dict[str, int]:
    """Each group's place when sorted by its label column: names alphabetically, prefixes
    and addresses numerically (10.77.2.0/24 before 10.77.10.0/24), for the sort script."""
    def by_address(group: Group) -> tuple[int, bytes]:
        return address_order(group.members[0].address)

    def by_name(group: Group) -> str:
        return group.label.lower()

    if report.options.by == "domain":
        ordered = sorted(report.groups, key=by_name)
    else:
        ordered = sorted(report.groups, key=by_address)
    return {group.key: rank for rank, group in enumerate(ordered)}


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("ncebpf.report", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    environment.filters.update(grouped=grouped, local_time=local_time, iso_time=iso_time,
                               per_minute=per_minute, per_second=per_second)
    return environment


def _page_title(snapshot: Snapshot) -> str:
    if snapshot.parts:  # several hosts: how many, and whether some gave nothing
        return f"ncebpf report — {snapshot.source}" + (" (partial)" if snapshot.partial else "")
    return f"ncebpf report — {snapshot.device} — {snapshot.name or snapshot.source}"


def render_html(report: Report) -> str:
    """The report as one HTML page (str), for a browser; nothing in it is fetched.

    Shows the dump's summary and totals (None counts as "unknown" with the
    dump's reason), the report's totals, the top groups and peers by bytes/s
    as charts, and every shown group with its members, sortable by each
    column. A report cut by --top says how many groups it leaves out.
    """
    snapshot = report.snapshot
    label_rank = _label_rank(report)
    members_shown = sum(len(g.members) for g in report.groups) <= MEMBERS_SHOWN_UP_TO
    return _environment().get_template("report.html.j2").render(
        report=report, snapshot=snapshot, options=report.options,
        heading=title(report), dump_totals=_dump_totals(report),
        charts=[Markup(svg) for svg in _charts(report)],
        time_chart=Markup(_time_chart(report.over_time))
        if report.over_time and report.snapshot.peers else None,
        member_rows=_member_rows, group_row=lambda group: Markup(_group_row(
            group, label_rank[group.key], report.options.by, members_shown)),
        hidden=report.totals.groups - len(report.groups),
        page_title=_page_title(snapshot),
        group_rows=report.groups)
