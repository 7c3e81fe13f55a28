"""sd_notify(3) datagrams, received on a real Unix socket as systemd would."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ncebpf.sdnotify import extend_stop_timeout, notify


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_of_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            abstract: bool) -> None:
    name = f"ncebpf-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name if abstract else name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name if abstract else name)
        notify("READY=1", "STATUS=counting on eth0 (xdp)")
        extend_stop_timeout()
        assert systemd.recv(4096) == b"READY=1\nSTATUS=counting on eth0 (xdp)"
        assert systemd.recv(4096) == b"EXTEND_TIMEOUT_USEC=30000000"


def test_without_systemd_or_with_it_gone_nothing_happens(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    notify("READY=1")  # logged at debug level, never raised
