"""The answer to a `changes <cursor>` request on the control socket, both ways. Pure.

One line, then three blobs whose sizes it gives:

    changes <header bytes> <records> <names bytes>\\n
    <header: JSON object>                  the instance and its totals (Header)
    <records x RECORD.itemsize bytes>      one packed little-endian record per peer
    <names: JSON object>                   {"<record position>": [names...]} where known

or `error <one line>\\n`. Binary records, not JSON: 100 000 peers are 6 MB that
numpy writes and reads in milliseconds, where JSON would hold the daemon's loop
for a large part of a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ncebpf.peerindex import KEY_SIZE

VERSION = 1
# A peer: its key (bpf/ncebpf_kern_user.h), its counters since it was first listed (in
# packets, in bytes, out packets, out bytes), the drain times (epoch s) it was first listed
# and its counters last moved, and whether it was listed after the caller's cursor (its
# whole counts are new to the caller).
RECORD = np.dtype([("key", f"V{KEY_SIZE}"), ("counts", "<u8", (4,)), ("first_seen", "<u4"),
                   ("last_seen", "<u4"), ("born", "u1")])
Records = npt.NDArray[np.void]
MAX_HEADER = 1 << 20  # a header is a few hundred bytes; anything larger is not ours


class WireError(ValueError):
    """An answer that does not follow this format."""


@dataclass(frozen=True)
class Header:
    """What every answer carries besides the peers.

    cursor: what the caller sends next; full: the records are every listed peer (the
    caller forgets those not among them), else only those that moved since its cursor;
    time: epoch seconds of the drain the counts are from; start: the table's start (or
    last HUP); totals: the dump's totals fields (None where unknown); others: peers no
    longer listed, summed; interval: the daemon's drain interval, s."""

    cursor: str
    full: bool
    time: float
    name: str = ""
    device: str = ""
    filter: str = ""
    mode: str = ""
    start: int = 0
    peers: int = 0
    capacity: int = 0
    interval: float = 0.0
    totals: dict[str, Any] = field(default_factory=dict)  # dump.totals_document
    others: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **self.__dict__}

    @classmethod
    def from_json(cls, document: Any) -> Header:
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise WireError("not a version-1 changes header")
        known = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise WireError(f"changes header: {exc}") from None


def encode(header: Header, records: Records, names: dict[int, list[str]]) -> bytes:
    """The whole answer; records of RECORD dtype, names by record position."""
    head = json.dumps(header.to_json(), separators=(",", ":")).encode()
    tail = json.dumps({str(at): list(n) for at, n in names.items()},
                      separators=(",", ":")).encode()
    body = np.ascontiguousarray(records, dtype=RECORD).tobytes()
    return b"".join((f"changes {len(head)} {len(records)} {len(tail)}\n".encode(), head,
                     body, tail))


def sizes(line: str) -> tuple[int, int, int]:
    """(header bytes, records, names bytes) of an answer's first line.

    Raises WireError for an `error ...` line (its text) or anything else."""
    verb, _, rest = line.strip().partition(" ")
    if verb == "error":
        raise WireError(rest or "the instance gave no reason")
    parts = rest.split()
    if verb != "changes" or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise WireError(f"unexpected answer {line[:60]!r}")
    head, count, tail = map(int, parts)
    if head > MAX_HEADER:
        raise WireError(f"a changes header of {head} bytes")
    return head, count, tail


def decode(head: bytes, body: bytes, tail: bytes) -> tuple[Header, Records, dict[int, list[str]]]:
    """The three blobs of an answer (after the line sizes() read) back into values."""
    try:
        header = Header.from_json(json.loads(head))
        raw_names = json.loads(tail) if tail else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"changes answer: {exc}") from None
    if len(body) % RECORD.itemsize:
        raise WireError(f"{len(body)} bytes of records: not whole records")
    records: Records = np.frombuffer(body, dtype=RECORD)
    names = {int(at): [str(n) for n in listed] for at, listed in raw_names.items()
             if isinstance(listed, list) and at.isdigit()}
    return header, records, names
