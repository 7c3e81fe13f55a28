"""Dump documents — JSON (schema 1) and the upstream Perl `.stats` — and atomic writing.

Rendering is pure and streams: the text comes in pieces of PEERS_PER_PIECE
peers, so a dump of a million peers never exists whole in memory. The
caller keeps the table still while the pieces are written (the daemon holds
its drains), so a dump is a point-in-time snapshot and never a half-written
structure (upstream §15.17).

The Perl dump keeps the upstream layout byte for byte (spec §10.2-10.3) so
that existing readers `do` or `eval` it, but every string in it is escaped:
names go into single-quoted Perl strings with `\\` and `'` escaped (single
quotes interpolate nothing), and header values are kept on their comment
line. Nothing from the wire or from DNS can execute (upstream §15.18).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncebpf.accounting import Others, PeerRecord, PeerTable, Totals, peer_text

SCHEMA_VERSION = 1
UPSTREAM_VERSION = "0.36"
FORMATS = ("json", "perl")


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


PEERS_PER_PIECE = 10_000  # a piece of dump text is about 1.7 MB of JSON


def _json_header(table: PeerTable, context: DumpContext, now: float) -> dict[str, Any]:
    """Everything of the JSON document but its peers."""
    totals, others = table.totals, table.others
    return {
        "version": SCHEMA_VERSION,
        "name": context.name,
        "start": table.start,
        "current": int(now),
        "hits_per_minute": round(table.rates.hits_per_minute),
        "bytes_per_second": round(table.rates.bytes_per_second),
        "users": len(table.peers),
        "device": context.device,
        "promiscuous": context.promiscuous,
        "filter": context.filter,
        "mode": context.mode,
        "match": context.match or None,
        "nomatch": context.nomatch or None,
        "payload": context.payload or None,
        "snaplen": context.snaplen,
        "totals": totals_document(totals),
        "others": {"peers": others.peers, "packets": others.packets, "bytes": others.bytes},
    }


def totals_document(totals: Totals) -> dict[str, Any]:
    """The dump's totals: a count the source cannot know is null, and `unknown` says why."""
    document: dict[str, Any] = {
        "packets": totals.packets,
        "bytes": totals.bytes,
        "filtered_out": totals.filtered_out,
        "unparsed": totals.unparsed,
        "unattributed": totals.unattributed,
        "overflow": totals.overflow,
        "dropped": totals.dropped,
    }
    if totals.unknown:
        document.update(dict.fromkeys(totals.unknown))
        document["unknown"] = dict(totals.unknown)
    return document


def _json_peer(record: PeerRecord) -> str:
    # Formatted by hand: json.dumps per peer would triple the cost of a dump.
    # repr() of int and float is what json writes for them.
    r = record
    names = json.dumps(list(r.N)) if r.N else "[]"
    return (f'{{"B": {r.B!r}, "C": {r.C!r}, "E": {r.E!r}, "N": {names}, "R": {r.R!r}, '
            f'"S": {r.S!r}, "T": {r.T!r}, "W": {r.W!r}, "packets": {r.packets!r}, '
            f'"bytes": {r.bytes!r}}}')


def json_pieces(table: PeerTable, context: DumpContext, now: float
                ) -> Iterator[tuple[str, int]]:
    """The JSON dump as pieces of text, each with the number of peers written so far.

    Peers are in key order (IPv4 before IPv6, numeric). Joined, the pieces are
    one JSON document of schema 1: `json_document` plus nothing.
    """
    head = json.dumps(_json_header(table, context, now), indent=1)
    yield head[:-2] + ',\n "peers": {', 0
    peers, done, lines = table.peers, 0, []
    for key in sorted(peers):
        lines.append(f'{"," if done else ""}\n  "{peer_text(key)}": {_json_peer(peers[key])}')
        done += 1
        if len(lines) == PEERS_PER_PIECE:
            yield "".join(lines), done
            lines = []
    yield "".join(lines) + ("\n }\n}\n" if done else "}\n}\n"), done


def json_document(table: PeerTable, context: DumpContext, now: float) -> dict[str, Any]:
    """The JSON dump as one object (schema 1, README "Reading a dump"); small tables only."""
    document: dict[str, Any] = json.loads("".join(t for t, _ in json_pieces(table, context,
                                                                              now)))
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


def stats_header(start: int, current: int, hits_per_minute: float, bytes_per_second: float,
                 users: int, device: str, promiscuous: bool, filter: str, match: str,
                 nomatch: str, payload: int, snaplen: int, others: Others) -> str:
    """The `.stats` header (spec §10.2) as text: an empty line, then `#` lines, each ended by `\\n`.

    start and current are epoch seconds (shown also as local ctime), the
    rates are printed `%.0f` (per minute, per second), users is the number
    of peers listed. device and filter are kept on their comment line
    (control characters written `\\x{h}`); match and nomatch ("" = not
    configured) are lower-cased and escaped as upstream does (escape_match),
    with the `fragment:` line of payload and snaplen before them. The
    `# others:` line is ncebpf's, written only when peers were retired.
    Pure: the `.stats` dump and reports over a JSON dump print the same text.
    """
    lines = [
        "",
        f"# Net::Connection::Sniffer version {UPSTREAM_VERSION}",
        f"# start:\t{start},\t{ctime(start)}",
        f"# current:\t{current},\t{ctime(current)}",
        f"# hits:\t\t{hits_per_minute:.0f} per minute",
        f"# bytes:\t{bytes_per_second:.0f} per second",
        f"# users:\t{users}",
        f"# device:\t{_comment_safe(device)}\t"
        f"{'promiscuous' if promiscuous else 'non-promiscuous'}",
        f"# bpf:\t\t{_comment_safe(filter)}",
    ]
    if match or nomatch:
        lines.append(f"# fragment:\t{payload} - {snaplen}")
        if match:
            lines.append(f"# contains:\t{escape_match(match.lower())}")
        if nomatch:
            lines.append(f"# excludes:\t{escape_match(nomatch.lower())}")
    if others.peers:  # not upstream's: only when peers were evicted or purged
        lines.append(f"# others:\t{others.peers} peers, {others.packets} packets, "
                     f"{others.bytes} bytes no longer listed")
    return "\n".join(lines) + "\n"


def perl_pieces(table: PeerTable, context: DumpContext, now: float
                ) -> Iterator[tuple[str, int]]:
    """The upstream `.stats` dump (spec §10.2-10.3) as pieces, with peers written so far."""
    header = stats_header(table.start, int(now), table.rates.hits_per_minute,
                          table.rates.bytes_per_second, len(table.peers), context.device,
                          context.promiscuous, context.filter, context.match, context.nomatch,
                          context.payload, context.snaplen, table.others)
    yield header + "{\n  my $dump = {\n", 0
    peers, done, lines = table.peers, 0, []
    for key in sorted(peers):
        r = peers[key]
        address = peer_text(key)
        separator = " " if len(address) > 13 else "\t"
        names = "".join(f"{_perl_string(name)}," for name in r.N)
        lines.append(f"\t'{address}'{separator}=> {{\n"
                     f"\t\tB\t=> {r.B:.0f},\n\t\tC\t=> {r.C},\n\t\tE\t=> {r.E},\n"
                     f"\t\tN\t=> [{names}],\n\t\tR\t=> {r.R:.0f},\n\t\tS\t=> {r.S},\n"
                     f"\t\tT\t=> {r.T},\n\t\tW\t=> {r.W:.0f},\n\t}},\n")
        done += 1
        if len(lines) == PEERS_PER_PIECE:
            yield "".join(lines), done
            lines = []
    yield "".join(lines) + "  };\n}\n", done


def render_perl(table: PeerTable, context: DumpContext, now: float) -> str:
    return "".join(text for text, _ in perl_pieces(table, context, now))


def pieces(fmt: str, table: PeerTable, context: DumpContext, now: float
           ) -> Iterator[tuple[str, int]]:
    """The dump in format fmt ("json" or "perl") as (text, peers written so far) pieces."""
    return perl_pieces(table, context, now) if fmt == "perl" else \
        json_pieces(table, context, now)


def write_atomically(path: Path, content: str | Iterable[str], mode: int = 0o644) -> None:
    """Write content to a scratch file beside path, sync it, rename it over path.

    Readers never see half a file, and a crash or power loss leaves either the
    old file or the new one. content may be an iterable of pieces, written as
    they come, so a dump of a million peers never exists whole in memory. The
    scratch file is made with O_EXCL (mkstemp) and renamed, so a link planted
    at path is replaced, never followed. On any error the scratch file is
    removed — on a full disk that frees what it took — and the error raised.
    """
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            for piece in ([content] if isinstance(content, str) else content):
                out.write(piece)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
