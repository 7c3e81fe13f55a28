"""How many frames each observer in bench/peers_cpu.py says it saw, read from its own output.

A capture tool that falls behind drops frames, and a dropped frame costs it nothing more: its
CPU per packet is only comparable with another's when both saw the frames that were sent.
Each reader here turns one tool's own report into a `Seen`. Pure; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True)
class Seen:
    """frames: what the tool accounted for (None when it did not say); detail: its own words,
    shortened, for the line next to its figure."""

    frames: int | None
    detail: str

    def note(self, sent: int) -> str:
        """'saw 900,000 of 900,000 sent; ...', flagged when it saw fewer than were sent."""
        if self.frames is None:
            return f"did not say how many frames it saw; {self.detail}"
        if self.frames < sent:
            return (f"SAW FEWER: {self.frames:,} of {sent:,} sent (a frame it missed cost it "
                    f"nothing); {self.detail}")
        return f"saw {self.frames:,} of {sent:,} sent; {self.detail}"


def _count(pattern: str, text: str) -> int | None:
    found = re.search(pattern, text, re.M)
    return int(found.group(1).replace(",", "")) if found else None


def tcpdump_seen(stderr: str) -> Seen:
    """tcpdump's summary on exit (tcpdump(1): "packets captured", "packets received by
    filter", "packets dropped by kernel"); frames = captured, the ones it wrote."""
    captured = _count(r"^(\d+) packets? captured", stderr)
    received = _count(r"^(\d+) packets? received by filter", stderr)
    dropped = _count(r"^(\d+) packets? dropped by kernel", stderr)
    return Seen(captured, f"tcpdump: {received} received by filter, {dropped} dropped by kernel")


def pmacctd_seen(core_log: str, in_table: int | None) -> Seen:
    """pmacctd's core reports libpcap's statistics as it exits ("received_packets=R
    dropped_packets=D", pmacct 1.7); frames = R − D, the frames its core was handed, or, when
    that line is missing, the packets in its table (short by a partly filled plugin buffer).
    in_table: the packets its memory plugin had counted (`pmacct -N ... -S`), None when the
    plugin did not answer; a plugin that falls behind the core misses frames too ("Missing data
    detected" in its log)."""
    found = re.search(r"received_packets=(\d+) dropped_packets=(\d+)", core_log)
    missing = core_log.count("Missing data detected")
    table = "did not answer" if in_table is None else f"{in_table:,}"
    detail = f"in its memory table: {table}"
    if missing:
        detail += f"; its plugin logged 'Missing data detected' {missing} times"
    if not found:
        return Seen(in_table, f"no libpcap statistics on exit, counted from its table; {detail}")
    received, dropped = int(found.group(1)), int(found.group(2))
    return Seen(received - dropped, f"libpcap: {received:,} received, {dropped:,} dropped; "
                f"{detail}")


def pmacct_sum(output: str) -> int | None:
    """The one number `pmacct -N ... -S -n packets` prints; None for anything else."""
    text = output.strip()
    return int(text) if text.isdigit() else None


class _Spans(HTMLParser):
    """The text of each <span id=...> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "span":
            self._open = dict(attrs).get("id")
            if self._open:
                self.spans[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.spans[self._open] += data


def darkstat_seen(page: str) -> Seen:
    """darkstat's front page (darkstat 3.0): "Seen <tb> bytes, in <tp> packets. (<pc> captured,
    <pd> dropped)"; frames = tp, the packets it accounted for; pc and pd are libpcap's
    statistics (pc counts the dropped ones too)."""
    parser = _Spans()
    parser.feed(page)

    def number(span: str) -> int | None:
        text = parser.spans.get(span, "").replace(",", "").strip()
        return int(text) if text.isdigit() else None

    captured, dropped = number("pc"), number("pd")
    return Seen(number("tp"), f"libpcap: {captured:,} captured, {dropped:,} dropped"
                if captured is not None and dropped is not None else "no libpcap statistics")


def ncebpf_seen(totals: Mapping[str, int]) -> Seen:
    """The totals of ncebpf's final JSON dump: every frame its program saw is counted, filtered
    out or dropped (docs: the dump's totals)."""
    frames = totals["packets"] + totals["filtered_out"] + totals["dropped"]
    return Seen(frames, f"ncebpf: {totals['packets']:,} counted, {totals['dropped']:,} dropped")


def process_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, of one /proc/PID/stat line (proc(5)); the command name
    in parentheses may itself hold spaces and parentheses, so fields count from the last ')'."""
    fields = stat[stat.rindex(")") + 2:].split()
    # After the name: state is field 3 of proc(5), utime 14 and stime 15.
    return int(fields[11]) + int(fields[12])
