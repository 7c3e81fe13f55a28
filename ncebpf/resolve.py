"""Reverse DNS for peers (spec §8), with upstream's weaknesses (§15.19) fixed.

Each peer whose T has passed gets a PTR query (in-addr.arpa or ip6.arpa).
Answers set N and T = now + TTL: PTR names, reverse-zone names dropped
unless that leaves none; NXDOMAIN gives `:` + the SOA's primary server; a
negative answer's TTL is RFC 2308's (the SOA's TTL, at most its minimum).
When no server gives a usable answer, T = now + one day.

Done right: every query has its own connected UDP socket, so the ID
(dnspython's, random) and the source port (the kernel's, random) cannot be
guessed and only the server asked can answer; the answer must match the
question; servers are tried in turn, each query at most MAX_TRIES times;
and queries in flight and queries per second are capped, so a flood of new
peers cannot turn ncebpf into a DNS flood. Lookups run from the daemon's
loop, never on the packet path.
"""

from __future__ import annotations

import heapq
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename

from ncebpf.accounting import PeerTable, peer_text
from ncebpf.errors import UsageError

log = logging.getLogger(__name__)

MIN_TTL_S = 5  # a TTL of 0 made upstream ask again on every packet
NO_ANSWER_TTL_S = 86400
QUERY_TIMEOUT_S = 2.0
MAX_TRIES = 4  # per lookup, cycling over the servers
DEFAULT_RATE = 20.0  # queries per second
DEFAULT_IN_FLIGHT = 32
WAITING_COMPACT_AT = 4096  # waiting lookups beyond which retired peers are dropped
MAX_NAME_LENGTH = 255
REVERSE_ZONES = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))


@dataclass(frozen=True)
class Server:
    address: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


def parse_server(text: str) -> Server:
    """`ADDR`, `ADDR:PORT`, `[V6ADDR]:PORT` or a bare IPv6 address."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise UsageError(f"--resolver wants an IP address and optional port, not {text!r}") \
            from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--resolver {text!r}: bad port")
    return Server(host, int(port))


def system_servers() -> list[Server]:
    """The name servers of /etc/resolv.conf."""
    try:
        return [Server(str(address)) for address in dns.resolver.Resolver().nameservers]
    except dns.resolver.NoResolverConfiguration:
        return []


@dataclass(frozen=True)
class Outcome:
    names: list[str]
    ttl: int  # T = now + ttl


def reverse_name(key: bytes) -> dns.name.Name:
    """The PTR query name of a peer key: in-addr.arpa for IPv4, ip6.arpa for IPv6.

    From the key, not the text: dnspython sends ::ffff:a.b.c.d to in-addr.arpa,
    but that peer is an IPv6 one, named (if at all) under ip6.arpa (RFC 3596 §2.5).
    """
    if key[0] == 4:
        return dns.reversename.from_address(peer_text(key))
    nibbles = key[4:].hex()[::-1]
    return dns.name.from_text(".".join(nibbles), origin=dns.reversename.ipv6_reverse_domain)


def clean_name(name: dns.name.Name) -> str | None:
    """Printable text of a name, or None. dnspython escapes every special or
    unprintable byte (\\DDD, \\"), so what is left is plain ASCII."""
    text = name.to_text(omit_final_dot=True)
    if not text or len(text) > MAX_NAME_LENGTH or not text.isascii() or not text.isprintable():
        return None
    return text


def _negative_ttl(response: dns.message.Message) -> tuple[int, str | None]:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            soa = rrset[0]
            return min(rrset.ttl, soa.minimum), clean_name(soa.mname)
    return NO_ANSWER_TTL_S, None


def interpret(response: dns.message.Message) -> Outcome | None:
    """What an answer to a PTR query means for N and T; None when it is no answer."""
    rcode = response.rcode()
    if response.flags & dns.flags.TC:
        return None  # truncated: ask the next server
    if rcode == dns.rcode.NXDOMAIN:
        ttl, mname = _negative_ttl(response)
        return Outcome([f":{mname}"] if mname else [], max(ttl, MIN_TTL_S))
    if rcode != dns.rcode.NOERROR:
        return None  # SERVFAIL, REFUSED, ...: ask the next server
    names: list[str] = []
    ttls: list[int] = []
    for rrset in response.answer:
        if rrset.rdtype != dns.rdatatype.PTR:
            continue  # CNAMEs of classless delegations
        ttls.append(rrset.ttl)
        names += [text for text in (clean_name(rd.target) for rd in rrset) if text]
    if not ttls:  # NODATA: the name exists, without a PTR
        ttl, _ = _negative_ttl(response)
        return Outcome([], max(ttl, MIN_TTL_S))
    named = [n for n in names if not any(dns.name.from_text(n).is_subdomain(zone)
                                         for zone in REVERSE_ZONES)]
    return Outcome(named or names, max(min(ttls), MIN_TTL_S))


def lookup_result(outcome: Outcome | None) -> str:
    """A finished lookup as the metrics count it: name, no_name or no_answer."""
    if outcome is None:
        return "no_answer"
    return "name" if outcome.names and not outcome.names[0].startswith(":") else "no_name"


class RateLimit:
    """A token bucket: `rate` per second, bursts of at most `burst`."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def next_token(self, now: float) -> float:
        return now + max(0.0, (1 - self.tokens) / self.rate)


@dataclass
class _Query:
    key: bytes
    message: dns.message.Message
    sock: socket.socket
    server: int  # index into the servers
    tries: int
    deadline: float


class ReverseResolver:
    def __init__(self, servers: list[Server], rate: float = DEFAULT_RATE,
                 in_flight: int = DEFAULT_IN_FLIGHT, timeout_s: float = QUERY_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not servers:
            raise UsageError("no DNS server to ask: give --resolver ADDR, or --no-resolve")
        self.servers = servers
        self.timeout_s = timeout_s
        self.max_in_flight = in_flight
        self._clock = clock
        self._limit = RateLimit(rate, burst=max(1.0, min(rate, in_flight)), now=clock())
        self._waiting: deque[bytes] = deque()
        self._pending: set[bytes] = set()  # waiting or in flight
        self._flying: dict[int, _Query] = {}  # by socket fd
        self._refresh: list[tuple[int, bytes]] = []  # (T, key) heap
        # Lookups finished, by result (the Prometheus metrics): name, no_name (NXDOMAIN or
        # no PTR), no_answer (no server answered within MAX_TRIES).
        self.results: Counter[str] = Counter()

    def want(self, key: bytes) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._waiting.append(key)

    def fds(self) -> list[int]:
        return list(self._flying)

    def next_deadline(self) -> float | None:
        """When service() next has something to do without a socket becoming readable."""
        deadlines = [q.deadline for q in self._flying.values()]
        if self._waiting and len(self._flying) < self.max_in_flight:
            deadlines.append(self._limit.next_token(self._clock()))
        if self._refresh:
            deadlines.append(float(self._refresh[0][0]))
        return min(deadlines) if deadlines else None

    def service(self, table: PeerTable) -> None:
        now = self._clock()
        # Snapshots: a retry closes a socket and opens one that may reuse its number.
        for query in list(self._flying.values()):
            if self._flying.get(query.sock.fileno()) is query:
                self._receive(query, table, now)
        for query in list(self._flying.values()):
            if query.deadline <= now and self._flying.get(query.sock.fileno()) is query:
                self._retry(query, table, now)
        while self._refresh and self._refresh[0][0] <= now:
            due, key = heapq.heappop(self._refresh)
            record = table.peers.get(key)
            if record is not None and record.T == due:
                self.want(key)
        if len(self._waiting) > max(WAITING_COMPACT_AT, 2 * len(table.peers)):
            self._forget_retired(table)
        while self._waiting and len(self._flying) < self.max_in_flight and \
                self._limit.take(now):
            key = self._waiting.popleft()
            if key in table.peers:
                self._send(key, 0, 1, now)
            else:
                self._pending.discard(key)  # purged or reset meanwhile

    def _forget_retired(self, table: PeerTable) -> None:
        """Drop waiting peers the table no longer lists (a flood of new sources that were
        evicted before their turn came), so the queue stays bounded as the table is."""
        keys = list(self._waiting)
        self._waiting = deque(key for key, listed in zip(keys, table.listed_among(keys),
                                                         strict=True) if listed)
        self._pending = set(self._waiting) | {q.key for q in self._flying.values()}

    def _send(self, key: bytes, server: int, tries: int, now: float) -> None:
        target = self.servers[server]
        message = dns.message.make_query(reverse_name(key),
                                         dns.rdatatype.PTR, use_edns=0, payload=1232)
        family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            # Connected: the kernel delivers only the server's answers, to a random port.
            sock.connect((target.address, target.port))
            sock.send(message.to_wire())
        except OSError as exc:
            log.debug("could not ask %s: %s", target, exc)
        self._flying[sock.fileno()] = _Query(key, message, sock, server, tries,
                                             now + self.timeout_s)

    def _receive(self, query: _Query, table: PeerTable, now: float) -> None:
        try:
            wire = query.sock.recv(65535)
        except BlockingIOError:
            return
        except OSError:  # ICMP port unreachable and the like: try elsewhere
            self._retry(query, table, now)
            return
        try:
            response = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return  # not an answer; keep waiting for one until the deadline
        if not query.message.is_response(response):
            return
        outcome = interpret(response)
        if outcome is None:
            self._retry(query, table, now)
        else:
            self._finish(query, table, outcome, now)

    def _retry(self, query: _Query, table: PeerTable, now: float) -> None:
        self._close(query)
        if query.tries >= MAX_TRIES:
            self._finish(query, table, None, now)
            return
        self._send(query.key, (query.server + 1) % len(self.servers), query.tries + 1, now)

    def _finish(self, query: _Query, table: PeerTable, outcome: Outcome | None,
                now: float) -> None:
        self._close(query)
        self._pending.discard(query.key)
        self.results[lookup_result(outcome)] += 1
        record = table.peers.get(query.key)
        if record is None:
            return
        if outcome is None:
            record.T = int(now) + NO_ANSWER_TTL_S
        else:
            record.N = outcome.names
            record.T = int(now) + outcome.ttl
        heapq.heappush(self._refresh, (record.T, query.key))

    def _close(self, query: _Query) -> None:
        self._flying.pop(query.sock.fileno(), None)
        query.sock.close()

    def close(self) -> None:
        for query in list(self._flying.values()):
            self._close(query)
