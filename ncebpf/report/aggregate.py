"""Peers into groups: by prefix, by registrable domain, or one group per peer. Pure.

Upstream's report library (spec §11.1-§11.2) walked the peers in text order
and lost rows on the way (§15.22-23): the last /24 of a walk with two or more
members vanished, an empty table crashed, and by-domain rows overwrote each
other when their /24s were not adjacent in host-name order. Here a group is
a dictionary entry keyed by what its members share, so every peer lands in
exactly one group whatever the order, and the report's sums are the dump's.

By domain, a peer's group is the registrable domain of its first name (the
name upstream used), from the Public Suffix List's ICANN section as shipped
by the publicsuffixlist package: a.example.co.uk and b.example.co.uk share
example.co.uk, where upstream's heuristic put every *.co.uk in one row. The
PSL's private section is left out on purpose: it would make every EC2 or
blogspot host a registrable domain of its own, and the question a report
answers is whose network it is. `--domain-rule upstream` keeps upstream's
key (`upstream_domain_key`) and its unit, the /24 group, for operators who
want upstream's rows.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Sequence
from functools import cache

from publicsuffixlist import PublicSuffixList

from ncebpf.report.model import Group, Options, Peer, Report, Snapshot, Totals

NO_NAME = "(no name)"
SOA_MARK = ":"  # spec §8.4: an NXDOMAIN answer's SOA gives the name ':' + MNAME


def address_order(address: str) -> tuple[int, bytes]:
    """Numeric order of address texts: IPv4 first, then IPv6, each by value.

    Raises ValueError for text that is not an address.
    """
    if ":" in address:
        return 1, socket.inet_pton(socket.AF_INET6, address)
    return 0, socket.inet_pton(socket.AF_INET, address)


def prefix_of(address: str, cidr4: int = 24, cidr6: int = 48) -> str:
    """The prefix an address belongs to, as network/length text (`10.77.1.0/24`)."""
    family, length, width = (socket.AF_INET6, cidr6, 128) if ":" in address else \
        (socket.AF_INET, cidr4, 32)
    packed = socket.inet_pton(family, address)
    mask = ((1 << length) - 1) << (width - length)
    network = (int.from_bytes(packed) & mask).to_bytes(len(packed))
    return f"{socket.inet_ntop(family, network)}/{length}"


@cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)


def registrable_domain(name: str) -> tuple[str, bool]:
    """(the registrable domain of a peer name, whether it came from an SOA).

    `:ns.example.net` (spec §8.4: no PTR, the zone's SOA names its primary
    server) gives ("example.net", True). A name the PSL cannot shorten —
    a public suffix itself, one label such as `localhost` — is its own
    domain, and so is an address written where a name belongs. Lower case,
    without a trailing dot; "" (and a bare ":") gives NO_NAME.
    """
    soa = name.startswith(SOA_MARK)
    host = name[1:] if soa else name
    host = host.strip().rstrip(".").lower()
    if not host:
        return NO_NAME, False
    if _is_address(host):  # a PTR that holds an address has no domain to shorten
        return host, soa
    return _public_suffixes().privatesuffix(host) or host, soa


def _is_address(text: str) -> bool:
    try:
        address_order(text)
    except (OSError, ValueError):
        return False
    return True


_WORD = r"[A-Za-z0-9_-]"
_UPSTREAM_CCSLD = re.compile(rf"{_WORD}{{2}}\.{_WORD}{{3}}\.{_WORD}+")
_UPSTREAM_SLD = re.compile(rf"{_WORD}+\.{_WORD}+")


def upstream_domain_key(name: str) -> str:
    """Upstream's domain key (spec §11.2): the lower-cased name reversed, cut by its heuristic.

    `www.example.com` → `moc.elpmaxe`, `example.com.au` → `ua.moc.elpmaxe`,
    `a.example.co.uk` → `ku.oc` (every *.co.uk together: upstream's rule,
    kept on request), `:ns.example.net` → `ten.elpmaxe`.
    """
    reversed_name = name.lower()[::-1]
    match = _UPSTREAM_CCSLD.match(reversed_name) or _UPSTREAM_SLD.match(reversed_name)
    return match.group(0) if match else reversed_name


def _first_name(peer: Peer) -> str:
    return peer.N[0] if peer.N else ""


def _sum_exact(values: Iterable[int | None]) -> int | None:
    """The sum, or None when any value is unknown (an upstream dump has no exact counts)."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _group(key: str, label: str, members: Sequence[Peer], soa: bool = False) -> Group:
    ordered = tuple(sorted(members, key=lambda p: address_order(p.address)))
    return Group(key=key, label=label, R=sum(p.R for p in ordered),
                 W=sum(p.W for p in ordered), E=max(p.E for p in ordered), members=ordered,
                 packets=_sum_exact(p.packets for p in ordered),
                 bytes=_sum_exact(p.bytes for p in ordered), soa=soa)


def group_of(address: str, names: Sequence[str], options: Options) -> tuple[str, str, bool]:
    """(key, label, soa) of the group a peer joins by options.by: its prefix (cidr), the
    registrable domain of its first name (domain, the PSL's rule), or itself (peer).

    The one rule reports and `ncebpf top` share. Upstream's domain rule keys whole /24
    groups, not peers: aggregate() alone applies it (ValueError here).
    """
    if options.by == "cidr":
        prefix = prefix_of(address, options.cidr4, options.cidr6)
        return prefix, prefix, False
    if options.by == "peer":
        return address, address, False
    if options.domain_rule == "upstream":
        raise ValueError("upstream's domain rule groups /24s, not peers")
    domain, soa = registrable_domain(names[0] if names else "")
    return domain, f"{domain} (SOA: no name of its own)" if soa else domain, soa


def _by_key(peers: Sequence[Peer], options: Options) -> list[Group]:
    # A domain and the same domain from an SOA are two groups with one key: told apart here.
    groups: dict[tuple[str, bool], tuple[str, list[Peer]]] = {}
    for peer in peers:
        key, label, soa = group_of(peer.address, peer.N, options)
        groups.setdefault((key, soa), (label, []))[1].append(peer)
    return [_group(key, label, members, soa)
            for (key, soa), (label, members) in groups.items()]


def _by_prefix(peers: Sequence[Peer], options: Options) -> list[Group]:
    return _by_key(peers, Options(by="cidr", cidr4=options.cidr4, cidr6=options.cidr6))


def _by_upstream_domain(peers: Sequence[Peer], options: Options) -> list[Group]:
    """Upstream's unit and key: prefix groups, keyed by their lowest peer's first name.

    Unlike upstream, groups with the same key are merged wherever they are
    in host-name order (spec §15.23: upstream overwrote the earlier row).
    """
    domains: dict[str, list[Group]] = {}
    for group in _by_prefix(peers, options):
        name = _first_name(group.members[0])
        domains.setdefault(upstream_domain_key(name), []).append(group)
    merged = []
    for key, groups in domains.items():
        soa = all(_first_name(g.members[0]).startswith(SOA_MARK) for g in groups)
        members = [peer for group in groups for peer in group.members]
        merged.append(_group(key, key[::-1] if key else NO_NAME, members, soa))
    return merged


def _by_peer(peers: Sequence[Peer]) -> list[Group]:
    # One group per peer, made directly: _group's sorts and sums cost seconds at 100 000.
    return [Group(key=p.address, label=p.address, R=p.R, W=p.W, E=p.E, members=(p,),
                  packets=p.packets, bytes=p.bytes) for p in peers]


_ORDER: dict[str, Callable[[Group], tuple[float, ...]]] = {
    # Upstream's order (§11.3): bytes/second as shown, highest first.
    "bandwidth": lambda g: (-int(g.W / 3600),),
    "hits": lambda g: (-g.R,),
    "peers": lambda g: (-len(g.members),),
    "last": lambda g: (-g.E,),
    # The exact counts: they order a report from the first second, where the hourly rates
    # stay 0 for five minutes (spec §7.2). Unknown counts (an upstream dump) go last.
    "packets": lambda g: (-(g.packets if g.packets is not None else -1),),
    "bytes": lambda g: (-(g.bytes if g.bytes is not None else -1),),
}


def order(groups: Iterable[Group], sort: str) -> list[Group]:
    """Groups by `sort` (SORT_CHOICES), highest first; ties by their lowest address.

    Raises KeyError for an unknown sort.
    """
    key = _ORDER[sort]
    return sorted(groups, key=lambda g: (key(g), address_order(g.members[0].address)))


def aggregate(snapshot: Snapshot, options: Options | None = None) -> Report:
    """Cut a snapshot into groups, ordered by options.sort, the top options.top of them kept.

    Every peer is in exactly one group, so the totals (over all groups,
    shown or not) equal the dump's sums. An empty snapshot gives an empty
    report, not an error (upstream died, §15.22).
    """
    options = options or Options()
    peers = snapshot.peers
    if options.by == "peer":
        groups = _by_peer(peers)
    elif options.by == "domain" and options.domain_rule == "upstream":
        groups = _by_upstream_domain(peers, options)
    else:
        groups = _by_key(peers, options)
    ordered = order(groups, options.sort)
    totals = Totals(groups=len(ordered), peers=len(peers), R=sum(g.R for g in ordered),
                    W=sum(g.W for g in ordered),
                    packets=_sum_exact(g.packets for g in ordered),
                    bytes=_sum_exact(g.bytes for g in ordered))
    shown = ordered if options.top is None else ordered[:options.top]
    return Report(snapshot=snapshot, options=options, groups=tuple(shown), totals=totals)
