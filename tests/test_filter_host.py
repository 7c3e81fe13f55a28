from __future__ import annotations

import pytest

from ncebpf.filter.host import first_host, resolve


@pytest.mark.parametrize(("expression", "host"), [
    ("dst host my.dns.com and udp port 53", "my.dns.com"),
    ("host 10.1.2.3", "10.1.2.3"),
    ("src host 10.1.2.3 or host 10.9.9.9", "10.1.2.3"),
    ("ip6 and (host fd77::1)", "fd77::1"),
    ("ether host aa:bb:cc:dd:ee:ff and host 10.0.0.1", "10.0.0.1"),
    ("ether src host aa:bb:cc:dd:ee:ff", None),
    ("localhost", None),  # upstream matched 'host' inside longer words
    ("udp port 53", None),
    ("not host 10.0.0.1", "10.0.0.1"),
    ("HOST 10.0.0.7", "10.0.0.7"),
])
def test_first_host(expression: str, host: str | None) -> None:
    assert first_host(expression) == host


def test_resolve_literals_and_names() -> None:
    assert resolve("10.77.0.1") == ["10.77.0.1"]
    assert resolve("fd77:0::1") == ["fd77::1"]
    assert "127.0.0.1" in resolve("localhost")
    assert resolve("nonexistent.invalid") == []
