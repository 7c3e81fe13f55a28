from __future__ import annotations

import logging

import pytest

from ncebpf.listener import DeniedLog, is_dump_request, normalise


@pytest.mark.parametrize(("payload", "wanted"), [
    (b"dump", True), (b"dump\n", True), (b"dump\r\n", True), (b"dumpster", False),
    (b"DUMP", False), (b"", False), (b"dump now", False), (b"\x00dump", False),
])
def test_only_dump_asks_for_a_dump(payload: bytes, wanted: bool) -> None:
    """Upstream took any datagram starting with `dump` (§15.16)."""
    assert is_dump_request(payload) is wanted


def test_dual_stack_senders_compare_as_ipv4() -> None:
    assert normalise("::ffff:10.77.0.1") == "10.77.0.1"
    assert normalise("fd77::0:1") == "fd77::1"


def test_refusals_are_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    denied = DeniedLog(interval_s=60)
    with caplog.at_level(logging.WARNING):
        logged = [denied.refused("10.77.0.2", now) for now in (0, 1, 2, 30, 61)]
    assert logged == [True, False, False, False, True]
    assert "3 more since the last report" in caplog.text
