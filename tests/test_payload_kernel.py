"""The in-kernel payload search decides as ncebpf/payload.py does, through BPF_PROG_TEST_RUN."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncebpf.kernel import libbpf
from ncebpf.kernel.build import BuildOptions, PayloadOptions, loaded_programs
from ncebpf.payload import accepts, fold, parse_needle

pytestmark = pytest.mark.privileged

XDP_PASS = 2


@dataclass(frozen=True)
class Case:
    match: bytes
    nomatch: bytes
    payload: int
    snaplen: int


CASES = [
    Case(b"Hello", b"", 42, 298),  # the largest window
    Case(b"", b"\x00bad", 42, 90),  # nomatch alone, with a NUL
    Case(parse_needle(r"\x0asomedomain\x03com"), b"x", 54, 90),  # upstream's DNS example
    Case(b"\xe9T\xe9\x00A", b"\xff\xff", 20, 60),  # high bytes and NUL in the needle
    Case(bytes(range(65, 97)), b"", 14, 270),  # a 32-byte needle
    Case(b"Q", b"z", 14, 200),  # one byte each
]


@pytest.fixture(scope="module")
def verdicts(privileged: None) -> Iterator[list[tuple[Case, int]]]:
    with_programs = []
    stack = []
    try:
        for case in CASES:
            options = PayloadOptions(fold(case.match), fold(case.nomatch), case.payload,
                                     case.snaplen)
            manager = loaded_programs(BuildOptions(max_peers=64, payload=options))
            programs = manager.__enter__()
            stack.append(manager)
            with_programs.append((case, programs.payload_verdict.fd))
        yield with_programs
    finally:
        for manager in reversed(stack):
            manager.__exit__(None, None, None)


def kernel_accepts(fd: int, frame: bytes) -> bool:
    return libbpf.prog_test_run(fd, frame).retval == XDP_PASS


def case_flip(data: bytes, flips: list[bool]) -> bytes:
    return bytes(b ^ 0x20 if flip and (65 <= b <= 90 or 97 <= b <= 122) else b
                 for b, flip in zip(data, flips + [False] * len(data), strict=False))


@st.composite
def frames_for(draw: st.DrawFn, case: Case) -> bytes:
    size = draw(st.integers(14, 420))
    body = bytearray(draw(st.binary(min_size=size, max_size=size)))
    for needle in (case.match, case.nomatch):
        if needle and draw(st.booleans()):
            part = needle[:draw(st.integers(1, len(needle)))]  # whole, or a near miss
            part = case_flip(part, draw(st.lists(st.booleans(), max_size=len(part))))
            edge = case.snaplen - draw(st.integers(0, len(part) + 2))  # straddle the end
            at = draw(st.sampled_from([case.payload, edge, draw(st.integers(0, 400))]))
            body[at:at + len(part)] = part
    return bytes(body[:max(size, 14)])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_kernel_search_equals_the_reference(verdicts: list[tuple[Case, int]], index: int) -> None:
    case, fd = verdicts[index]

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frame=frames_for(case))
    def check(frame: bytes) -> None:
        expected = accepts(frame, fold(case.match), fold(case.nomatch), case.payload,
                           case.snaplen)
        assert kernel_accepts(fd, frame) is expected, frame.hex()

    check()


def test_matches_straddling_the_window_end(verdicts: list[tuple[Case, int]]) -> None:
    case, fd = verdicts[0]
    for end in range(case.snaplen - 6, case.snaplen + 2):
        frame = bytearray(400)
        frame[end - 5:end] = b"hELLo"
        inside = end <= case.snaplen
        assert kernel_accepts(fd, bytes(frame)) is inside, end
