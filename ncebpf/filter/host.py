"""The filter's first `host`: upstream's reference host, now one side of the peer rule.

Upstream took the first `host` followed by an IPv4 name and used its first
address (spec §2.2, §15.7). ncebpf takes the first `host` keyword that names
an IP host (not `ether host`), IPv4 or IPv6, and every address the name
resolves to, since libpcap's filter matches them all.
"""

from __future__ import annotations

import ipaddress
import re
import socket

_TOKEN = re.compile(r"[()!]|[^\s()!]+")
_LINK_LAYER = {"ether", "fddi", "tr", "wlan"}


def first_host(expression: str) -> str | None:
    """The operand of the first IP `host` primitive in a tcpdump expression."""
    tokens: list[str] = _TOKEN.findall(expression)
    for i, token in enumerate(tokens[:-1]):
        if token.lower() != "host":
            continue
        qualifiers = {t.lower() for t in tokens[max(0, i - 2):i]}
        if qualifiers & _LINK_LAYER:
            continue
        return tokens[i + 1]
    return None


def resolve(host: str) -> list[str]:
    """Every address of host (literal or name), IPv4 and IPv6, in resolver order."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_RAW)
    except socket.gaierror:
        return []
    addresses: list[str] = []
    for info in infos:
        text = str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        if text not in addresses:
            addresses.append(text)
    return addresses


def local_hosts(expression: str) -> tuple[str, ...]:
    """The addresses of the expression's first host: the local side of the peer rule."""
    host = first_host(expression)
    return tuple(resolve(host)) if host else ()
