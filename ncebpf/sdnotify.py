"""Tell systemd how the service is doing: the sd_notify(3) datagram protocol.

Without $NOTIFY_SOCKET (not started by systemd, or not Type=notify) every
call does nothing. A failure to notify is logged and otherwise ignored:
systemd's bookkeeping must never stop the counting. The protocol is one
datagram of newline-separated KEY=VALUE lines to a Unix socket whose name
starts with "@" when it is abstract; a library for that would be larger
than the protocol.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

# While the final dump is being written, each sign of progress buys this much
# more time from systemd's TimeoutStopSec (EXTEND_TIMEOUT_USEC, systemd >= 236).
EXTEND_BY_S = 30


def notify(*lines: str) -> None:
    """Send lines such as "READY=1" or "STATUS=…" to systemd, if it listens."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.debug("could not notify systemd at %s: %s", address, exc)


def extend_stop_timeout() -> None:
    notify(f"EXTEND_TIMEOUT_USEC={EXTEND_BY_S * 1_000_000}")
