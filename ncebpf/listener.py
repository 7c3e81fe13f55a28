"""The UDP dump listener (spec §4.2), with the sender check upstream never made.

A datagram `dump` from an allowed address gets `OK <epoch>` once the dump
is written; anything else from an allowed address gets `??` and changes
nothing; a sender that is not allowed gets no answer, and is logged at most
once a minute. Requests that arrive within a second of a dump share it, so
a burst of requests cannot turn into a burst of disk writes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from types import TracebackType

from ncebpf.errors import NcebpfError

log = logging.getLogger(__name__)

MAX_DATAGRAM = 512
DENIED_LOG_INTERVAL_S = 60.0
LOOPBACK = ("127.0.0.1", "::1")


def normalise(address: str) -> str:
    """Text of an address, with IPv4-mapped IPv6 (dual-stack sockets) as IPv4."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_dump_request(payload: bytes) -> bool:
    """Exactly `dump`, optionally followed by line-end whitespace (not `dumpster`)."""
    return payload.rstrip(b"\r\n\t ") == b"dump"


def allowed_or_default(allow: Iterable[str]) -> tuple[str, ...]:
    """The allowed senders: `allow` (addresses, already resolved), or when it is empty
    loopback and this host's own addresses (upstream's client sends from the address of
    the host's name). Shared by the UDP listener and the report server."""
    given = tuple(allow)
    if given:
        return given
    from ncebpf.kernel.netif import all_addresses

    return (*LOOPBACK, *(address for _, address, _ in all_addresses()))


class DeniedLog:
    """One log line per interval for refused senders, with how many were refused.

    what names a request in the log, "dump request" or "report request".
    """

    def __init__(self, interval_s: float = DENIED_LOG_INTERVAL_S,
                 what: str = "dump request") -> None:
        self.interval_s = interval_s
        self.what = what
        self._next = 0.0
        self._suppressed = 0

    def refused(self, sender: str, now: float) -> bool:
        """Record a refusal; True when this one should be logged."""
        if now < self._next:
            self._suppressed += 1
            return False
        if self._suppressed:
            log.warning("refused %ss: %d more since the last report", self.what,
                        self._suppressed)
        self._suppressed = 0
        self._next = now + self.interval_s
        log.warning("refused a %s from %s: not in the allowed list", self.what, sender)
        return True


class DumpListener:
    def __init__(self, address: str, port: int, allowed: Iterable[str]) -> None:
        self.address, self.port = address, port
        self.allowed = {normalise(a) for a in allowed}
        self.denied = DeniedLog()
        self._sock: socket.socket | None = None

    def __enter__(self) -> DumpListener:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError as exc:
            sock.close()
            raise NcebpfError(f"could not bind 'listen on' to port {self.port} on "
                              f"{self.address}: {exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock
        log.info("dump listener on %s port %d, allowed: %s", self.address, self.port,
                 ", ".join(sorted(self.allowed)))
        return self

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def receive(self, now: float) -> tuple[bool, tuple[object, ...]] | None:
        """One datagram: (wants a dump, reply address) from an allowed sender, else None."""
        assert self._sock is not None
        try:
            payload, sender = self._sock.recvfrom(MAX_DATAGRAM)
        except BlockingIOError:
            return None
        if normalise(sender[0]) not in self.allowed:
            self.denied.refused(sender[0], now)
            return None
        return is_dump_request(payload), sender

    def reply(self, sender: tuple[object, ...], text: str) -> None:
        """Send text to sender; nothing once the listener is closed (a request that waited
        for the final dump: the daemon has stopped listening, the client asks elsewhere)."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(text.encode(), sender)
        except OSError as exc:
            log.warning("could not answer %s: %s", sender[0], exc.strerror)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
