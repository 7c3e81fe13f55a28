"""Payload match/nomatch (spec §5.3), as ncebpf defines it. Pure: the reference.

The window is the frame's bytes [payload, min(snaplen, frame length)).
A frame counts when the window contains `match` (if set) and does not
contain `nomatch` (if set), comparing ASCII letters without regard to case
and every other byte exactly. Upstream's defects are fixed: nomatch tests
nomatch (not match), the search does not stop at a NUL byte, and frames
shorter than snaplen are searched as far as they go instead of dropped.
The kernel search (bpf/payload.h) and the pcap source both follow this
module; the tests hold them to it.

Needles are given as text in which `\\xHH` stands for byte HH and `\\\\`
for a backslash; characters up to U+00FF are single bytes.
"""

from __future__ import annotations

import re
import sys

from ncebpf.errors import UsageError

KERNEL_MAX_NEEDLE = 32  # bytes: the in-kernel search compares at most this many
KERNEL_MAX_WINDOW = 256  # bytes: and copies at most this many from the frame
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|\\)")
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_LOWER = bytes(range(ord("a"), ord("z") + 1))
_FOLD = bytes.maketrans(_UPPER, _LOWER)


def parse_needle(text: str) -> bytes:
    """The bytes a match/nomatch string stands for."""
    def byte(m: re.Match[str]) -> str:
        token = m.group(1)
        return "\\" if token == "\\" else chr(int(token[1:], 16))

    decoded = _ESCAPE.sub(byte, text)
    try:
        return decoded.encode("latin-1")
    except UnicodeEncodeError:
        raise UsageError(f"match strings are bytes: {text!r} has characters beyond \\xff; "
                         "write them as \\xHH escapes") from None


def needle_words(needle: bytes, words: int = KERNEL_MAX_NEEDLE // 8
                 ) -> tuple[list[int], list[int]]:
    """The needle and its byte mask as the kernel's 64-bit loads read them (native order)."""
    padded = needle.ljust(words * 8, b"\0")
    mask = (b"\xff" * len(needle)).ljust(words * 8, b"\0")
    return ([int.from_bytes(padded[8 * i:8 * i + 8], sys.byteorder) for i in range(words)],
            [int.from_bytes(mask[8 * i:8 * i + 8], sys.byteorder) for i in range(words)])


def fold(data: bytes) -> bytes:
    """ASCII lower case; every other byte stays as it is."""
    return data.translate(_FOLD)


def window(frame: bytes, payload: int, snaplen: int) -> bytes:
    return frame[payload:min(snaplen, len(frame))]


def accepts(frame: bytes, match: bytes, nomatch: bytes, payload: int, snaplen: int) -> bool:
    """Whether the frame counts, given folded needles (see fold)."""
    searched = fold(window(frame, payload, snaplen))
    if match and match not in searched:
        return False
    return not (nomatch and nomatch in searched)


def kernel_limits(match: bytes, nomatch: bytes, payload: int, snaplen: int) -> str | None:
    """Why the kernel search cannot do this, or None when it can."""
    for name, needle in (("match", match), ("nomatch", nomatch)):
        if len(needle) > KERNEL_MAX_NEEDLE:
            return (f"the {name} string is {len(needle)} bytes; the kernel search takes "
                    f"at most {KERNEL_MAX_NEEDLE}")
    if (match or nomatch) and snaplen - payload > KERNEL_MAX_WINDOW:
        return (f"the payload window is {snaplen - payload} bytes (snaplen {snaplen} - "
                f"payload {payload}); the kernel search takes at most {KERNEL_MAX_WINDOW}")
    return None
