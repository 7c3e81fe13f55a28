"""Dumps read back into a `Snapshot`: a dump file, or a fresh dump of a running instance.

Three kinds of file, told apart by their content, never by their name:
- ncebpf's JSON dump (schema 1, README "Reading a dump");
- a `.stats` file in the upstream layout (spec §10.2-10.3), written by
  ncebpf or by the Perl daemon Net::Connection::Sniffer;
- the coalescer's `composite.stats` (spec §11.8): several headers, a grand
  total, then a Data::Dumper `$VAR1 = {...};` with numbers maybe quoted.

A `.stats` body is read as data by `perldata` (upstream string-evaluates
it, spec §10.4 and §15): a hostile file gives data or a one-line error.
The regular per-peer layout of §10.3 is read by one compiled regular
expression per record (a 100 000-peer dump in a fraction of a second);
flat records in any other layout (Data::Dumper's) by a looser one; anything
else, and every file either leaves, by the general parser, which also
names the line of any error.

Errors are NcebpfError, one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ncebpf.accounting import IPV4_KEY_PREFIX, IPV6_KEY_PREFIX, Others, gc_paused, peer_text
from ncebpf.config import Instance
from ncebpf.control import request_dump
from ncebpf.dump import SCHEMA_VERSION, stats_header
from ncebpf.errors import NcebpfError
from ncebpf.report import perldata
from ncebpf.report.aggregate import address_order
from ncebpf.report.model import DIRECTION_FIELDS, TOTAL_FIELDS, Peer, Snapshot

# The regular layout of spec §10.3, as ncebpf and upstream write it.
_BODY_OPEN = re.compile(r"\{\n  my \$dump = \{\n")
_BODY_CLOSE = re.compile(r"  \};\n\}\s*")
_RECORD = re.compile(
    r"\t'([0-9A-Fa-f.:]+)'[\t ]=> \{\n"
    r"\t\tB\t=> (-?\d+),\n\t\tC\t=> (\d+),\n\t\tE\t=> (\d+),\n"
    r"\t\tN\t=> \[((?:'(?:[^'\\]|\\.)*',)*)\],\n"
    r"\t\tR\t=> (-?\d+),\n\t\tS\t=> (\d+),\n\t\tT\t=> (\d+),\n\t\tW\t=> (-?\d+),\n\t\},\n",
    re.DOTALL)
# Any other layout of flat records — Data::Dumper's (spec §11.8), hand-edited files: keys
# quoted or bare in any order, numbers maybe quoted, any spacing. Strings hold no escapes
# except in N; anything else goes to the general parser. Spaces are matched possessively
# (\s*+): a run of them is never re-split on failure, so a hostile run of spaces costs linear
# time, not quadratic.
_LOOSE_OPEN = re.compile(r"\s*+(?:\{\s*+my\s+\$dump|(?:my\s+)?\$VAR1)\s*+=\s*+\{")
_LOOSE_CLOSE_DUMP = re.compile(r"\s*+\}\s*+;\s*+\}\s*+")
_LOOSE_CLOSE_VAR = re.compile(r"\s*+\}\s*+;\s*+")
_QUOTED = r"'(?:[^'\\]|\\.)*'"
_LOOSE_SCALAR = r"(?:'[^'\\]*'|-?[0-9.]+(?:[eE][-+]?[0-9]+)?|undef)"
_LOOSE_FIELD = re.compile(
    rf"\s*+'?([A-Za-z]\w*)'?\s*+=>\s*+(?:({_LOOSE_SCALAR})|\[((?:\s*+{_QUOTED}\s*+,)*"
    rf"(?:\s*+{_QUOTED})?)\s*+\])\s*+(?:,|(?=\s*\}}))", re.DOTALL)
_LOOSE_RECORD = re.compile(
    rf"\s*+'([0-9A-Fa-f.:]+)'\s*+=>\s*+\{{((?:{_LOOSE_FIELD.pattern})*)\s*+\}}\s*+(?:,|(?=\s*\}}))",
    re.DOTALL)
_QUOTED_NAME = re.compile(r"'((?:[^'\\]|\\.)*)'", re.DOTALL)
_NAME = re.compile(r"'((?:[^'\\]|\\.)*)',", re.DOTALL)
_NUMBER = re.compile(r"\s*-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*")
UPSTREAM_BANNER = "# Net::Connection::Sniffer version"

# Header lines (spec §10.2); upstream's own consumers match `hits:\s+(\d+)` (§10.4).
_START = re.compile(r"^#[ \t]*start:\s+(\d+)", re.MULTILINE)
_CURRENT = re.compile(r"^#[ \t]*current:\s+(\d+)", re.MULTILINE)
_HITS = re.compile(r"^#[ \t]*hits:\s+(\d+)", re.MULTILINE)
_BYTES = re.compile(r"^#[ \t]*bytes:\s+(\d+)", re.MULTILINE)
_USERS = re.compile(r"^#[ \t]*users:\s+(\d+)", re.MULTILINE)
_DEVICE = re.compile(r"^#[ \t]*device:\t(.*)\t(promiscuous|non-promiscuous)[ \t\r]*$",
                     re.MULTILINE)
_BPF = re.compile(r"^#[ \t]*bpf:\t*(.*?)[\r]?$", re.MULTILINE)
_FRAGMENT = re.compile(r"^#[ \t]*fragment:\s+(\d+) - (\d+)", re.MULTILINE)
_CONTAINS = re.compile(r"^#[ \t]*contains:\t(.*?)[\r]?$", re.MULTILINE)
_EXCLUDES = re.compile(r"^#[ \t]*excludes:\t(.*?)[\r]?$", re.MULTILINE)
_OTHERS = re.compile(r"^#[ \t]*others:\s+(\d+) peers, (\d+) packets, (\d+) bytes", re.MULTILINE)

_INT_FIELDS = ("C", "E", "S", "T")
_FLOAT_FIELDS = ("B", "R", "W")
_JSON_REQUIRED = ("start", "current", "hits_per_minute", "bytes_per_second", "users", "device",
                  "promiscuous", "filter", "peers")
_Number = TypeVar("_Number", int, float)


MAX_DUMP_BYTES = 2 << 30  # a JSON dump of a million peers is about 100-170 MB


def read_dump(path: Path) -> Snapshot:
    """The dump at path — ncebpf JSON (schema 1) or a `.stats` file — as a Snapshot.

    The format is the content's: a text that starts with `{` and parses as
    JSON is a JSON dump; anything else is read as a `.stats` file (spec
    §10.2-10.4, §11.8). source is str(path). Raises NcebpfError, one line
    naming the file: missing, a directory, unreadable, empty, not a dump,
    or `line N: what was expected`.
    """
    return dump_from_bytes(_read_bytes(path), str(path))


def _read_bytes(path: Path) -> bytes:
    """A dump file's bytes; NcebpfError naming path when it is no file ncebpf should read."""
    try:
        # Never wait on a FIFO (O_NONBLOCK: opening one waits for a writer), nor read a
        # device or a file beyond any dump's size.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as dump:
            info = os.fstat(dump.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise NcebpfError(f"{path}: not a regular file (a FIFO or a device?): give "
                                  "the path of a dump file")
            if info.st_size > MAX_DUMP_BYTES:
                raise NcebpfError(f"{path}: {info.st_size >> 20} MiB, larger than any dump "
                                  f"({MAX_DUMP_BYTES >> 30} GiB holds over ten million peers)")
            return dump.read()
    except FileNotFoundError:
        raise NcebpfError(f"{path}: no such file: give the path of a dump "
                          "(ncebpf dump writes <statedir>/<name>.json)") from None
    except IsADirectoryError:
        raise NcebpfError(f"{path}: is a directory, not a dump file") from None
    except OSError as err:
        raise NcebpfError(f"{path}: cannot read it: {err.strerror}") from None


def dump_from_bytes(raw: bytes, source: str) -> Snapshot:
    """A dump's bytes (a file's, or a remote `ncebpf dump`'s output) as read_dump reads
    them; source names it. Raises NcebpfError as read_dump does."""
    if not raw.strip():
        raise NcebpfError(f"{source}: empty file, not a dump")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        # Upstream writes match strings' bytes 0xA8-0xFE raw (spec §10.2): Latin-1.
        text = raw.decode("latin-1")
    with gc_paused():
        return parse_dump(text, source)


def from_instance(instance: Instance, timeout_s: float) -> Snapshot:
    """A fresh JSON dump of the running instance (as `ncebpf dump` asks), read back.

    timeout_s bounds the instance's silence while it writes (control.request_dump).
    source is "instance NAME". Raises NotRunning or NcebpfError as request_dump
    and read_dump do.
    """
    return dump_of_instance(instance, timeout_s)[0]


def dump_of_instance(instance: Instance, timeout_s: float) -> tuple[Snapshot, bytes]:
    """from_instance's snapshot with the very bytes it was read from (what /dump.json
    serves, so that a served dump and its reports always agree)."""
    raw = _read_bytes(request_dump(instance, "json", timeout_s))
    return dump_from_bytes(raw, f"instance {instance.name}"), raw


def parse_dump(text: str, source: str) -> Snapshot:
    """A dump's text as a Snapshot; source names it in the Snapshot and in errors. Pure."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            # `{` then a quoted key is JSON gone wrong; `{` then `my $dump` is Perl.
            if stripped[1:].lstrip().startswith('"'):
                raise NcebpfError(f"{source}: not valid JSON (truncated?): line {err.lineno} "
                                  f"column {err.colno}: {err.msg}") from None
        else:
            return parse_json_dump(document, source)
    return parse_stats(text, source)


# -- JSON ----------------------------------------------------------------------------------

def parse_json_dump(document: Any, source: str) -> Snapshot:
    """An ncebpf JSON dump (schema 1, README "Reading a dump"), already decoded. Pure.

    header is the `.stats` header dump.stats_header renders from the same
    fields, byte for byte what the `.stats` dump of the same moment starts with.
    """
    if not isinstance(document, dict) or "version" not in document:
        raise NcebpfError(f"{source}: JSON but not an ncebpf dump (no \"version\" field)")
    if not _is_int(document["version"]) or document["version"] != SCHEMA_VERSION:
        raise NcebpfError(f"{source}: an ncebpf dump of schema version "
                          f"{document['version']!r}; this ncebpf reads version "
                          f"{SCHEMA_VERSION}: read it with the ncebpf that wrote it")
    for key in _JSON_REQUIRED:
        if key not in document:
            raise NcebpfError(f"{source}: not an ncebpf dump: no \"{key}\" field")
    d = document
    start = _json_int(d, "start", source)
    current = _json_int(d, "current", source)
    hits = _json_int(d, "hits_per_minute", source)
    nbytes = _json_int(d, "bytes_per_second", source)
    users = _json_int(d, "users", source)
    device = _json_str(d, "device", source)
    filter_ = _json_str(d, "filter", source)
    promiscuous = d["promiscuous"]
    if not isinstance(promiscuous, bool):
        raise NcebpfError(f"{source}: \"promiscuous\" is {promiscuous!r}, not true or false")
    match = _json_optional(d, "match", str, source)
    nomatch = _json_optional(d, "nomatch", str, source)
    payload = _json_optional(d, "payload", int, source)
    snaplen = _json_optional(d, "snaplen", int, source)
    mode = _json_optional(d, "mode", str, source)
    name = _json_optional(d, "name", str, source)
    totals, unknown = _json_totals(d.get("totals"), source)
    others = _json_others(d.get("others"), source)
    peers = _checked(_json_peers(d["peers"], source), source)
    header = stats_header(start, current, hits, nbytes, users, device, promiscuous, filter_,
                          match or "", nomatch or "", payload or 0, snaplen or 0,
                          Others(**others) if others else Others())
    return Snapshot(source=source, start=start, current=current, hits_per_minute=hits,
                    bytes_per_second=nbytes, users=users, device=device,
                    promiscuous=promiscuous, filter=filter_, header=header, peers=peers,
                    name=name, mode=mode, match=match, nomatch=nomatch, payload=payload,
                    snaplen=snaplen, totals=totals, unknown=unknown, others=others)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_int(document: dict[str, Any], key: str, source: str) -> int:
    value = document[key]
    if not _is_int(value):
        raise NcebpfError(f"{source}: \"{key}\" is {value!r}, not an integer")
    return int(value)


def _json_str(document: dict[str, Any], key: str, source: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise NcebpfError(f"{source}: \"{key}\" is {value!r}, not a string")
    return value


def _json_optional(document: dict[str, Any], key: str, kind: type[Any], source: str) -> Any:
    value = document.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise NcebpfError(f"{source}: \"{key}\" is {value!r}, not a {kind.__name__} or null")
    return value


def _json_totals(totals: Any, source: str) -> tuple[dict[str, int | None], dict[str, str]]:
    if totals is None:
        return {}, {}
    if not isinstance(totals, dict):
        raise NcebpfError(f"{source}: \"totals\" is not an object")
    counts: dict[str, int | None] = {}
    for key in TOTAL_FIELDS + tuple(k for k in DIRECTION_FIELDS if k in totals):
        value = totals.get(key)
        if value is not None and not _is_int(value):
            raise NcebpfError(f"{source}: totals \"{key}\" is {value!r}, not a count or null")
        counts[key] = value
    unknown = totals.get("unknown") or {}
    if not isinstance(unknown, dict) or not all(isinstance(v, str) for v in unknown.values()):
        raise NcebpfError(f"{source}: totals \"unknown\" is not an object of reasons")
    return counts, dict(unknown)


def _json_others(others: Any, source: str) -> dict[str, int]:
    if others is None:
        return {}
    if not isinstance(others, dict) or set(others) != {"peers", "packets", "bytes"} \
            or not all(_is_int(v) for v in others.values()):
        raise NcebpfError(f"{source}: \"others\" is not {{\"peers\", \"packets\", \"bytes\"}} "
                          "counts")
    return dict(others)


def _json_peers(peers: Any, source: str) -> tuple[Peer, ...]:
    if not isinstance(peers, dict):
        raise NcebpfError(f"{source}: \"peers\" is not an object")
    out = []
    number = (int, float)
    for address, p in peers.items():
        try:
            names = p["N"]
            peer = Peer(address, p["B"], p["C"], p["E"], tuple(names), p["R"], p["S"], p["T"],
                        p["W"], p.get("packets"), p.get("bytes"), p.get("in_packets"),
                        p.get("in_bytes"), p.get("out_packets"), p.get("out_bytes"))
        except (KeyError, TypeError) as err:
            raise NcebpfError(f"{source}: peer {address!r} is not a peer record "
                              f"(B C E N R S T W): {type(err).__name__} {err}") from None
        # Checked without a call per field: a dump has up to millions of peers.
        if not (type(peer.B) in number and type(peer.R) in number and type(peer.W) in number
                and type(peer.C) is int and type(peer.E) is int and type(peer.S) is int
                and type(peer.T) is int and type(names) is list
                and all(type(n) is str for n in names)
                and (peer.packets is None or type(peer.packets) is int)
                and (peer.bytes is None or type(peer.bytes) is int)
                and all(count is None or type(count) is int for count in peer[-4:])):
            raise NcebpfError(f"{source}: peer {address!r} has a field of the wrong type "
                              "(B R W numbers, C E S T integers, N a list of strings, "
                              "packets, bytes and in/out counts integers)")
        out.append(peer)
    return tuple(out)


# -- .stats --------------------------------------------------------------------------------

def split_header(text: str) -> tuple[str, int]:
    """(header, offset of the body): the leading lines that start with `#` or are blank
    (whitespace only), spec §10.4, exactly as they are in text."""
    offset = 0
    while offset < len(text):
        # Lines end at \n only: str.splitlines would also end them at \x85 or \u2028,
        # which a header value may hold.
        end = text.find("\n", offset)
        end = len(text) if end < 0 else end + 1
        if not (text.startswith("#", offset) or not text[offset:end].strip()):
            break
        offset = end
    return text[:offset], offset


def parse_stats(text: str, source: str) -> Snapshot:
    """A `.stats` file (spec §10.2-10.4, §11.8) as a Snapshot. Pure; the body is never run.

    header is kept verbatim. From it: start (the earliest, should there be
    several hosts' headers), current (the latest), hits and bytes (the last
    figures: a composite's grand total), users (the header's figure; the
    number of peers for a composite), device, promiscuous, filter and match /
    nomatch (the first, as written: escaped), payload and snaplen, and
    ncebpf's `# others:` line. A figure the header lacks is 0 (users: the
    number of peers). totals is empty and packets/bytes of peers None: a
    `.stats` file has none. Peers are in numeric order, IPv4 first: a file
    in the layout of §10.3 is already; any other (Data::Dumper writes hash
    order) is sorted. A header-only file is a dump of no peers when it has
    the upstream banner line; one without it is not a dump.
    """
    header, body_start = split_header(text)
    if not text[body_start:].strip():
        if UPSTREAM_BANNER not in header:
            raise NcebpfError(f"{source}: only comments, not a .stats dump (no "
                              f"'{UPSTREAM_BANNER}' line)")
        peers: tuple[Peer, ...] = ()
    else:
        fast = _regular_peers(text, body_start)
        if fast is None:
            fast = _loose_peers(text, body_start, source)
        peers = fast if fast is not None else _general_peers(text, body_start, source)
    return _stats_snapshot(header, _checked(peers, source), source)


def _regular_peers(text: str, offset: int) -> tuple[Peer, ...] | None:
    """The peers of a body in exactly the layout of spec §10.3; None for any other body."""
    opening = _BODY_OPEN.match(text, offset)
    if opening is None:
        return None
    pos, peers, match, unescape = opening.end(), [], _RECORD.match, perldata.single_quoted
    while (m := match(text, pos)) is not None:
        address, b, c, e, names, r, s, t, w = m.groups()
        if not names:
            name_tuple: tuple[str, ...] = ()
        elif "\\" not in names:  # then no name holds a quote: split on the separators
            name_tuple = tuple(names[1:-2].split("','"))
        else:
            name_tuple = tuple(unescape(n) for n in _NAME.findall(names))
        peers.append(Peer(address, float(b), int(c), int(e), name_tuple, float(r), int(s),
                          int(t), float(w)))
        pos = m.end()
    if _BODY_CLOSE.fullmatch(text, pos) is None:
        return None
    return tuple(peers)


def _loose_peers(text: str, offset: int, source: str) -> tuple[Peer, ...] | None:
    """The peers of a body of flat records in any layout; None for anything else."""
    opening = _LOOSE_OPEN.match(text, offset)
    if opening is None:
        return None
    peers: list[Peer] = []
    pos, match, fields = opening.end(), _LOOSE_RECORD.match, _LOOSE_FIELD.findall
    unescape = perldata.single_quoted
    while (m := match(text, pos)) is not None:
        record: dict[str, Any] = {}
        for key, scalar, names in fields(text, m.start(2), m.end()):
            if not scalar:
                record[key] = [unescape(n) for n in _QUOTED_NAME.findall(names)]
            elif scalar[0] == "'":
                record[key] = scalar[1:-1]
            else:
                record[key] = None if scalar == "undef" else scalar
        try:  # the common case without a call per field; the rest checked one by one
            if not isinstance(record["N"], list):
                raise TypeError
            peer = Peer(m.group(1), float(record["B"]), int(record["C"]), int(record["E"]),
                        tuple(record["N"]), float(record["R"]), int(record["S"]),
                        int(record["T"]), float(record["W"]))
        except (KeyError, TypeError, ValueError):
            peer = _peer_from_perl(m.group(1), record, source)
        peers.append(peer)
        pos = m.end()
    closing = _LOOSE_CLOSE_DUMP if opening.group().lstrip().startswith("{") \
        else _LOOSE_CLOSE_VAR
    if closing.fullmatch(text, pos) is None:
        return None
    return tuple(peers)


def _general_peers(text: str, offset: int, source: str) -> tuple[Peer, ...]:
    try:
        table = perldata.parse(text, offset)
    except perldata.PerlDataError as err:
        raise NcebpfError(f"{source}: not a readable .stats dump: {err}") from None
    if not isinstance(table, dict):
        raise NcebpfError(f"{source}: not a .stats dump: its value is not a hash of peers")
    return _peers_from_table(table, source)


def _peers_from_table(table: dict[str, Any], source: str) -> tuple[Peer, ...]:
    peers = [_peer_from_perl(address, record, source) for address, record in table.items()]
    return tuple(peers)


def _peer_from_perl(address: str, record: perldata.PerlValue, source: str) -> Peer:
    where = f"{source}: peer {address!r}"
    if not isinstance(record, dict):
        raise NcebpfError(f"{where} is not a hash of B C E N R S T W")
    missing = [k for k in ("B", "C", "E", "N", "R", "S", "T", "W") if k not in record]
    if missing:
        raise NcebpfError(f"{where} has no {' '.join(missing)}: not a .stats peer record")
    names = record["N"]
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str | int) for n in names):
        raise NcebpfError(f"{where}: N is not a list of names")
    ints = [_perl_number(record[k], int, f"{where}: {k}") for k in _INT_FIELDS]
    floats = [_perl_number(record[k], float, f"{where}: {k}") for k in _FLOAT_FIELDS]
    return Peer(address, floats[0], ints[0], ints[1], tuple(str(n) for n in names), floats[1],
                ints[2], ints[3], floats[2])


def _perl_number(value: perldata.PerlValue, kind: Callable[[Any], _Number],
                 where: str) -> _Number:
    """A number, or a string that is one (Data::Dumper quotes many numbers, spec §11.8)."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value) if kind is float or not value.strip().lstrip("-").isdigit() \
            else int(value)
    if value is None:  # undef is 0 in Perl arithmetic
        value = 0
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise NcebpfError(f"{where} is {value!r}, not a finite number")
    if kind is int and value != int(value):
        raise NcebpfError(f"{where} is {value!r}, not a whole number")
    return kind(value)


MAX_FIGURE = float(1 << 63)  # beyond any counter or rate a link reaches; reports print up to it
MAX_EPOCH = 253402300799  # 9999-12-31 23:59:59 UTC: the last second time functions take


def _checked(peers: Iterable[Peer], source: str) -> tuple[Peer, ...]:
    """The peers, once each and in numeric order (IPv4 first), every one of them sound.

    An address must be an IPv4 or IPv6 address, and is kept in its canonical
    text (RFC 5952 for IPv6, as ncebpf writes it). A peer listed twice is
    kept once, with its last record: what Perl's hash and a JSON object make
    of the same text. Counts, rates and times must be finite, not negative,
    and printable (times up to the year 9999). Raises NcebpfError naming the
    file, the peer and the field.
    """
    by_address: dict[str, Peer] = {}
    previous: tuple[int, bytes] = (0, b"")
    ordered = True
    pton = socket.inet_pton
    for peer in peers:
        address = peer.address
        family, prefix = (socket.AF_INET6, IPV6_KEY_PREFIX) if ":" in address else \
            (socket.AF_INET, IPV4_KEY_PREFIX)
        try:
            packed = pton(family, address)
        except (OSError, ValueError):  # ValueError: a NUL in the text
            raise NcebpfError(f"{source}: peer {_shown(address)} is not an IPv4 or IPv6 "
                              "address (a damaged dump?)") from None
        canonical = peer_text(prefix + packed)  # the text ncebpf's own dumps hold
        if canonical != address:
            peer = peer._replace(address=canonical)
            address = canonical
        # One chain of comparisons per peer (NaN fails every one): a dump has up to millions.
        if not (0 <= peer.B <= MAX_FIGURE and 0 <= peer.R <= MAX_FIGURE
                and 0 <= peer.W <= MAX_FIGURE and 0 <= peer.C <= MAX_FIGURE
                and 0 <= peer.E <= MAX_EPOCH and 0 <= peer.S <= MAX_EPOCH
                and 0 <= peer.T <= MAX_EPOCH
                and (peer.packets is None or 0 <= peer.packets <= MAX_FIGURE)
                and (peer.bytes is None or 0 <= peer.bytes <= MAX_FIGURE)):
            raise NcebpfError(_unsound(peer, source))
        order = (family, packed)
        if order < previous or address in by_address:
            ordered = False
        previous = order
        by_address[address] = peer
    checked = tuple(by_address.values())
    return checked if ordered else tuple(sorted(checked, key=lambda p: address_order(p.address)))


def _unsound(peer: Peer, source: str) -> str:
    """What is wrong with a peer _checked refused: its first field out of range."""
    for name in ("B", "R", "W", "C", "packets", "bytes", "E", "S", "T"):
        value = getattr(peer, name)
        limit = MAX_EPOCH if name in "EST" else MAX_FIGURE
        if value is not None and not 0 <= value <= limit:
            what = "a time before 1970 or after 9999" if name in "EST" else \
                "not a finite number" if not math.isfinite(value) else \
                "negative" if value < 0 else "beyond any real figure"
            return f"{source}: peer {peer.address!r}: {name} is {value!r}: {what}"
    return f"{source}: peer {peer.address!r} is not a sound record"


def _shown(text: str) -> str:
    """Text from a damaged file, quoted, cut, and with anything unprintable escaped."""
    return ascii(text[:60] + ("…" if len(text) > 60 else ""))


def _stats_snapshot(header: str, peers: tuple[Peer, ...], source: str) -> Snapshot:
    starts = [int(x) for x in _START.findall(header)]
    currents = [int(x) for x in _CURRENT.findall(header)]
    hits = _HITS.findall(header)
    nbytes = _BYTES.findall(header)
    users = _USERS.findall(header)
    device = _DEVICE.search(header)
    bpf = _BPF.search(header)
    fragment = _FRAGMENT.search(header)
    contains = _CONTAINS.search(header)
    excludes = _EXCLUDES.search(header)
    others = _OTHERS.search(header)
    return Snapshot(
        source=source,
        start=min(starts, default=0),
        current=max(currents, default=0),
        hits_per_minute=int(hits[-1]) if hits else 0,
        bytes_per_second=int(nbytes[-1]) if nbytes else 0,
        users=int(users[0]) if len(users) == 1 else len(peers),
        device=device.group(1) if device else "",
        promiscuous=device is not None and device.group(2) == "promiscuous",
        filter=bpf.group(1) if bpf else "",
        header=header,
        peers=peers,
        match=contains.group(1) if contains else None,
        nomatch=excludes.group(1) if excludes else None,
        payload=int(fragment.group(1)) if fragment else None,
        snaplen=int(fragment.group(2)) if fragment else None,
        others=({"peers": int(others.group(1)), "packets": int(others.group(2)),
                 "bytes": int(others.group(3))} if others else {}),
    )
