"""Dump documents — JSON (schema 1) and the upstream Perl `.stats` — and atomic writing.

Rendering is pure and streams: the text comes in pieces of PEERS_PER_PIECE
peers, so a dump of a million peers never exists whole in memory. A dump
is rendered from a TableSnapshot (PeerTable.snapshot: copies of the columns
at one instant), so it is a point-in-time picture and never a half-written
structure (upstream §15.17), while the table goes on counting.

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncebpf.accounting import (
    IN_BYTES,
    IN_PACKETS,
    OUT_BYTES,
    OUT_PACKETS,
    Others,
    PeerTable,
    TableSnapshot,
    Totals,
    peer_text,
)

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
    # The history's queue (ncebpf.history.sink): closed bins waiting on disk for the
    # database, and bins dropped from a full queue; None without a history.
    history_pending_bins: int | None = None
    history_dropped_bins: int | None = None


PEERS_PER_PIECE = 10_000  # a piece of dump text is about 1.7 MB of JSON


def _json_header(table: TableSnapshot, context: DumpContext, now: float) -> dict[str, Any]:
    """Everything of the JSON document but its peers."""
    totals, others = table.totals, table.others
    return {
        "version": SCHEMA_VERSION,
        "name": context.name,
        "start": table.start,
        "current": int(now),
        "hits_per_minute": round(table.rates.hits_per_minute),
        "bytes_per_second": round(table.rates.bytes_per_second),
        "users": len(table),
        "device": context.device,
        "promiscuous": context.promiscuous,
        "filter": context.filter,
        "mode": context.mode,
        "match": context.match or None,
        "nomatch": context.nomatch or None,
        "payload": context.payload or None,
        "snaplen": context.snaplen,
        "totals": totals_document(totals) | ({
            "history_pending_bins": context.history_pending_bins,
            "history_dropped_bins": context.history_dropped_bins,
        } if context.history_pending_bins is not None else {}),
        "others": {"peers": others.peers, "packets": others.packets, "bytes": others.bytes},
    }


def totals_document(totals: Totals) -> dict[str, Any]:
    """The dump's totals: a count the source cannot know is null, and `unknown` says why."""
    document: dict[str, Any] = {
        "packets": totals.packets,
        "bytes": totals.bytes,
        "in_packets": totals.in_packets,
        "in_bytes": totals.in_bytes,
        "out_packets": totals.out_packets,
        "out_bytes": totals.out_bytes,
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


PeerFields = tuple[str, int, int, int, Sequence[str], float, int, int, float, int, int, int,
                   int]  # address, B C E N R S T W, in/out packets/bytes


def frozen(table: PeerTable | TableSnapshot) -> TableSnapshot:
    """The snapshot to write, in key order: the one given, or one taken of the table now."""
    return table.in_key_order() if isinstance(table, TableSnapshot) else table.snapshot()


def _rows_in_pieces(snapshot: TableSnapshot) -> Iterator[list[PeerFields]]:
    """The snapshot's peers in key order (IPv4 before IPv6, numeric), PEERS_PER_PIECE at a
    time, each as plain Python values read from the columns in one numpy call per column."""
    names, start = snapshot.names, snapshot.start
    for at in range(0, len(snapshot), PEERS_PER_PIECE):
        end = at + PEERS_PER_PIECE
        counts = snapshot.counts[at:end]
        keys: list[bytes] = snapshot.keys[at:end].tolist()
        yield [(peer_text(key), b, c, e, names.get(position, ()), r, start, t, w, ip, ib, op,
                ob)
               for position, key, b, c, e, r, t, w, ip, ib, op, ob in zip(
                   range(at, at + len(keys)), keys, snapshot.B[at:end].tolist(),
                   snapshot.C[at:end].tolist(), snapshot.E[at:end].tolist(),
                   snapshot.R[at:end].tolist(), snapshot.T[at:end].tolist(),
                   snapshot.W[at:end].tolist(), counts[:, IN_PACKETS].tolist(),
                   counts[:, IN_BYTES].tolist(), counts[:, OUT_PACKETS].tolist(),
                   counts[:, OUT_BYTES].tolist(), strict=True)]


def json_pieces(table: PeerTable | TableSnapshot, context: DumpContext, now: float
                ) -> Iterator[tuple[str, int]]:
    """The JSON dump as pieces of text, each with the number of peers written so far.

    Peers are in key order (IPv4 before IPv6, numeric). Joined, the pieces are
    one JSON document of schema 1: `json_document` plus nothing. Each peer is
    formatted by hand: json.dumps per peer would triple the cost of a dump;
    repr() of int and float is what json writes for them.
    """
    snapshot = frozen(table)
    head = json.dumps(_json_header(snapshot, context, now), indent=1)
    yield head[:-2] + ',\n "peers": {', 0
    yield from _closed(_json_peer_texts(snapshot), "\n }\n}\n", "}\n}\n")


def _json_peer_texts(table: TableSnapshot) -> Iterator[tuple[str, int]]:
    done = 0
    for piece in _rows_in_pieces(table):
        lines = []
        for address, b, c, e, n, r, s, t, w, ip, ib, op, ob in piece:
            names = json.dumps(list(n)) if n else "[]"
            lines.append(f'{"," if done else ""}\n  "{address}": {{"B": {b!r}, "C": {c!r}, '
                         f'"E": {e!r}, "N": {names}, "R": {r!r}, "S": {s!r}, "T": {t!r}, '
                         f'"W": {w!r}, "packets": {ip + op!r}, "bytes": {ib + ob!r}, '
                         f'"in_packets": {ip!r}, "in_bytes": {ib!r}, "out_packets": {op!r}, '
                         f'"out_bytes": {ob!r}}}')
            done += 1
        yield "".join(lines), len(piece)


def _closed(texts: Iterator[tuple[str, int]], closing: str, closing_empty: str | None = None
            ) -> Iterator[tuple[str, int]]:
    """(text, peers in it) pieces as (text, peers written so far), closing appended to the
    last partial piece (or alone after full ones); closing_empty when there were no peers."""
    done = 0
    for text, peers in texts:
        done += peers
        if peers < PEERS_PER_PIECE:
            yield text + closing, done
            return
        yield text, done
    yield (closing if done or closing_empty is None else closing_empty), done


def json_document(table: PeerTable | TableSnapshot, context: DumpContext, now: float
                  ) -> dict[str, Any]:
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


def perl_pieces(table: PeerTable | TableSnapshot, context: DumpContext, now: float
                ) -> Iterator[tuple[str, int]]:
    """The upstream `.stats` dump (spec §10.2-10.3) as pieces, with peers written so far."""
    table = frozen(table)
    header = stats_header(table.start, int(now), table.rates.hits_per_minute,
                          table.rates.bytes_per_second, len(table), context.device,
                          context.promiscuous, context.filter, context.match, context.nomatch,
                          context.payload, context.snaplen, table.others)
    yield header + "{\n  my $dump = {\n", 0
    yield from _closed(_perl_peer_texts(table), "  };\n}\n")


def _perl_peer_texts(table: TableSnapshot) -> Iterator[tuple[str, int]]:
    for piece in _rows_in_pieces(table):
        lines = []
        for address, b, c, e, n, r, s, t, w, *_ in piece:
            separator = " " if len(address) > 13 else "\t"
            names = "".join(f"{_perl_string(name)}," for name in n)
            lines.append(f"\t'{address}'{separator}=> {{\n"
                         f"\t\tB\t=> {b:.0f},\n\t\tC\t=> {c},\n\t\tE\t=> {e},\n"
                         f"\t\tN\t=> [{names}],\n\t\tR\t=> {r:.0f},\n\t\tS\t=> {s},\n"
                         f"\t\tT\t=> {t},\n\t\tW\t=> {w:.0f},\n\t}},\n")
        yield "".join(lines), len(piece)


def render_perl(table: PeerTable | TableSnapshot, context: DumpContext, now: float) -> str:
    return "".join(text for text, _ in perl_pieces(table, context, now))


def pieces(fmt: str, table: PeerTable | TableSnapshot, context: DumpContext, now: float
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
