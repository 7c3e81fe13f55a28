"""Payload match/nomatch semantics (spec §5.3, with upstream §15.5 and §15.6 fixed)."""

from __future__ import annotations

import sys

import pytest

from ncebpf.errors import UsageError
from ncebpf.payload import accepts, fold, kernel_limits, needle_words, parse_needle, window

FRAME = bytes(42) + b"Header: X-Evil\x00After-NUL BAD end"


def test_needles_take_hex_escapes() -> None:
    assert parse_needle(r"\x0asomedomain\x03com") == b"\nsomedomain\x03com"
    assert parse_needle(r"a\\x41") == b"a\\x41"
    assert parse_needle("\xe9t\xe9") == b"\xe9t\xe9"
    with pytest.raises(UsageError, match="beyond"):
        parse_needle("\u20ac")


def test_fold_is_ascii_only() -> None:
    assert fold(b"AbZ@[`\xc9\xe9") == b"abz@[`\xc9\xe9"


def test_window_is_cut_at_snaplen_or_the_frame_end() -> None:
    assert window(bytes(range(100)), 10, 20) == bytes(range(10, 20))
    assert window(bytes(range(15)), 10, 20) == bytes(range(10, 15))
    assert window(bytes(range(5)), 10, 20) == b""


def test_nomatch_tests_nomatch_not_match() -> None:
    """Upstream §15.5: the exclusion searched for the match string."""
    assert accepts(FRAME, fold(b"x-evil"), fold(b"bad"), 42, 200) is False
    assert accepts(FRAME, fold(b"x-evil"), fold(b"good"), 42, 200) is True
    assert accepts(FRAME, b"", fold(b"good"), 42, 200) is True  # nomatch alone works
    assert accepts(FRAME, b"", fold(b"bad"), 42, 200) is False


def test_search_goes_past_a_nul_byte() -> None:
    """Upstream §15.6: the C string search stopped at the first NUL."""
    assert accepts(FRAME, fold(b"after-nul"), b"", 42, 200)
    assert accepts(FRAME, fold(b"-evil\x00after"), b"", 42, 200)


def test_frames_shorter_than_snaplen_are_searched_not_dropped() -> None:
    """Upstream §15.4: frames shorter than snaplen were dropped from all accounting."""
    assert len(FRAME) < 1500
    assert accepts(FRAME, fold(b"end"), b"", 42, 1500)
    assert accepts(bytes(30), b"", fold(b"x"), 42, 1500)  # no window: nomatch alone passes
    assert not accepts(bytes(30), fold(b"x"), b"", 42, 1500)


def test_a_match_must_lie_inside_the_window() -> None:
    assert accepts(FRAME, fold(b"bad"), b"", 42, FRAME.index(b"BAD") + 3)
    assert not accepts(FRAME, fold(b"bad"), b"", 42, FRAME.index(b"BAD") + 2)
    assert not accepts(FRAME, fold(b"header"), b"", 43, 200)


def test_kernel_limits() -> None:
    assert kernel_limits(b"x" * 32, b"", 42, 298) is None
    assert "33 bytes" in (kernel_limits(b"x" * 33, b"", 42, 90) or "")
    assert "257 bytes" in (kernel_limits(b"x", b"", 42, 299) or "")
    assert kernel_limits(b"", b"", 0, 65535) is None  # no search, no limit


def test_needle_words_pack_like_native_loads() -> None:
    words, masks = needle_words(b"abcdefghij")
    assert len(words) == 4 and masks[2:] == [0, 0]
    raw = b"abcdefghij\0\0\0\0\0\0"
    assert words[:2] == [int.from_bytes(raw[0:8], sys.byteorder),
                         int.from_bytes(raw[8:16], sys.byteorder)]
    assert masks[1] == int.from_bytes(b"\xff\xff" + bytes(6), sys.byteorder)
