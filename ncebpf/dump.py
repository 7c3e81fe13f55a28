"""Dump documents — JSON (schema 1) and the upstream Perl `.stats` — and atomic writing.

Rendering is pure and works on the whole table at once, so a dump is a
point-in-time snapshot and never a half-written structure (upstream §15.17).

The Perl dump keeps the upstream layout byte for byte (spec §10.2-10.3) so
that existing readers `do` or `eval` it, but every string in it is escaped:
names go into single-quoted Perl strings with `\\` and `'` escaped (single
quotes interpolate nothing), and header values are kept on their comment
line. Nothing from the wire or from DNS can execute (upstream §15.18).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncebpf.accounting import PeerTable, Totals, peer_text

SCHEMA_VERSION = 1
UPSTREAM_VERSION = "0.36"
FORMATS = ("json", "perl")
SUFFIX = {"json": ".json", "perl": ".stats"}


@dataclass(frozen=True)
class DumpContext:
    """What a dump says about the run, beside the table itself."""

    name: str
    device: str
    mode: str
    filter: str = ""
    promiscuous: bool = False
    match: str = ""
    nomatch: str = ""
    payload: int = 0
    snaplen: int = 38


def json_document(table: PeerTable, context: DumpContext, now: float) -> dict[str, Any]:
    peers = {}
    for key in sorted(table.peers):
        r = table.peers[key]
        peers[peer_text(key)] = {"B": r.B, "C": r.C, "E": r.E, "N": list(r.N), "R": r.R,
                                 "S": r.S, "T": r.T, "W": r.W, "packets": r.packets,
                                 "bytes": r.bytes}
    totals = table.totals
    return {
        "version": SCHEMA_VERSION,
        "name": context.name,
        "start": table.start,
        "current": int(now),
        "hits_per_minute": round(table.rates.hits_per_minute),
        "bytes_per_second": round(table.rates.bytes_per_second),
        "users": len(peers),
        "device": context.device,
        "promiscuous": context.promiscuous,
        "filter": context.filter,
        "mode": context.mode,
        "match": context.match or None,
        "nomatch": context.nomatch or None,
        "payload": context.payload or None,
        "snaplen": context.snaplen,
        "totals": totals_document(totals),
        "peers": peers,
    }


def totals_document(totals: Totals) -> dict[str, Any]:
    """The dump's totals: a count the source cannot know is null, and `unknown` says why."""
    document: dict[str, Any] = {
        "packets": totals.packets,
        "bytes": totals.bytes,
        "filtered_out": totals.filtered_out,
        "unparsed": totals.unparsed,
        "overflow": totals.overflow,
        "dropped": totals.dropped,
    }
    if totals.unknown:
        document.update(dict.fromkeys(totals.unknown))
        document["unknown"] = dict(totals.unknown)
    return document


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1) + "\n"


def ctime(epoch: int) -> str:
    """`Mon Apr 24 17:00:12 2006`: local time, day padded with a space."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(epoch))


def escape_match(text: str) -> str:
    """Upstream's escaping of match strings: bytes < 0x20, 0x7f-0xa7 and 0xff as \\x{h}."""
    out = []
    for byte in text.encode("latin-1", errors="replace"):
        if byte < 0x20 or 0x7F <= byte <= 0xA7 or byte == 0xFF:
            out.append(f"\\x{{{byte:x}}}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _comment_safe(text: str) -> str:
    """A header value that stays on its comment line."""
    return "".join(f"\\x{{{ord(c):x}}}" if ord(c) < 0x20 or ord(c) == 0x7F else c
                   for c in text)


def _perl_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_perl(table: PeerTable, context: DumpContext, now: float) -> str:
    current = int(now)
    lines = [
        "",
        f"# Net::Connection::Sniffer version {UPSTREAM_VERSION}",
        f"# start:\t{table.start},\t{ctime(table.start)}",
        f"# current:\t{current},\t{ctime(current)}",
        f"# hits:\t\t{table.rates.hits_per_minute:.0f} per minute",
        f"# bytes:\t{table.rates.bytes_per_second:.0f} per second",
        f"# users:\t{len(table.peers)}",
        f"# device:\t{_comment_safe(context.device)}\t"
        f"{'promiscuous' if context.promiscuous else 'non-promiscuous'}",
        f"# bpf:\t\t{_comment_safe(context.filter)}",
    ]
    if context.match or context.nomatch:
        lines.append(f"# fragment:\t{context.payload} - {context.snaplen}")
        if context.match:
            lines.append(f"# contains:\t{escape_match(context.match.lower())}")
        if context.nomatch:
            lines.append(f"# excludes:\t{escape_match(context.nomatch.lower())}")
    lines += ["{", "  my $dump = {"]
    for key in sorted(table.peers):
        r = table.peers[key]
        address = peer_text(key)
        separator = " " if len(address) > 13 else "\t"
        names = "".join(f"{_perl_string(name)}," for name in r.N)
        lines += [
            f"\t'{address}'{separator}=> {{",
            f"\t\tB\t=> {r.B:.0f},",
            f"\t\tC\t=> {r.C},",
            f"\t\tE\t=> {r.E},",
            f"\t\tN\t=> [{names}],",
            f"\t\tR\t=> {r.R:.0f},",
            f"\t\tS\t=> {r.S},",
            f"\t\tT\t=> {r.T},",
            f"\t\tW\t=> {r.W:.0f},",
            "\t},",
        ]
    lines += ["  };", "}", ""]
    return "\n".join(lines)


def render(fmt: str, table: PeerTable, context: DumpContext, now: float) -> str:
    if fmt == "perl":
        return render_perl(table, context, now)
    return render_json(json_document(table, context, now))


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside path, then rename: readers never see half a file."""
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        os.unlink(scratch)
        raise
