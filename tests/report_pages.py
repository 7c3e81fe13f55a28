"""Snapshots for the HTML report tests, and a parse of the page with the standard library."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from html.parser import HTMLParser

from ncebpf.report.model import Peer, Snapshot

HOSTILE_NAMES = ("<script>alert(1)</script><img src=x onerror=alert(2)>",
                 '"><svg onload=alert(3)>')
START = 1_796_000_000


def peer(address: str, index: int, names: tuple[str, ...] = ()) -> Peer:
    """A peer whose rates and exact counts are distinct multiples of index (index > 0)."""
    return Peer(address=address, B=100 * index, C=3 * index, E=START + 600 + index, N=names,
                R=60.0 * index, S=START + index, T=0, W=3600.0 * 1000 * index,
                packets=7 * index, bytes=1_001 * index)


def snapshot(peers: tuple[Peer, ...], **extra: object) -> Snapshot:
    """A pcap-mode JSON dump's snapshot of these peers, with one peer no longer listed."""
    fields: dict[str, object] = dict(
        source="/var/lib/ncebpf/test.json", start=START, current=START + 3600,
        hits_per_minute=17, bytes_per_second=123_456, users=len(peers), device="veth-t0",
        promiscuous=False, filter="udp or tcp", header="# test dump\n", peers=peers,
        name="test", mode="pcap",
        # The dump's packets and bytes are its listed peers' and those no longer listed.
        totals={"packets": sum(p.packets or 0 for p in peers) + 5,
                "bytes": sum(p.bytes or 0 for p in peers) + 555, "filtered_out": 11,
                "unparsed": None, "unattributed": 0, "overflow": 3, "dropped": 0},
        unknown={"unparsed": "pcap mode: libpcap does not count them"},
        others={"peers": 1, "packets": 5, "bytes": 555})
    fields.update(extra)
    return Snapshot(**fields)  # type: ignore[arg-type]


def hostile_snapshot() -> Snapshot:
    """Named peers in two /24s and one IPv6 peer whose PTR names hold markup and script."""
    peers = (peer("10.77.1.1", 1, ("a.example.co.uk",)),
             peer("10.77.1.2", 2, ("b.example.co.uk", "alias.example.net")),
             peer("10.77.2.9", 3),
             peer("fd77::9", 40, HOSTILE_NAMES))
    return snapshot(peers)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


@dataclass
class Page(HTMLParser):
    """Every element with its attributes and own text, in document order; text and comments."""

    elements: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    _open: list[Element] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        if tag not in {"meta", "br", "img", "input", "link", "rect", "path", "line",
                       "circle", "use"}:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._open:
            self._open[-1].text += data

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements with this tag (any, if None) whose attributes include attrs (`_` for `-`)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [e for e in self.elements if (tag is None or e.tag == tag)
                and all(e.attrs.get(k) == v for k, v in wanted.items())]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


_DOMAINS = ("example.co.uk", "shop.example.com", "example.org", "mirror.example.net",
            "cdn.example.de", "example.com.au")
_HOSTS = ("www", "mail", "api", "static", "ns1", "vpn", "db", "git")


def realistic_snapshot() -> Snapshot:
    """An evening on a small site's link: 44 peers in six /24s and two IPv6 /48s.

    Names like host.example.co.uk (some peers with two names, some with none),
    one peer named only by its zone's SOA (`:ns1.example.net`, spec §8.4),
    addresses in 10.77.0.0/16 and fd77::/16 only. Deterministic.
    """
    rng = random.Random(77)
    peers = []
    for index in range(1, 45):
        if index <= 36:
            address = f"10.77.{index % 6 + 1}.{rng.randrange(2, 250)}"
        else:
            address = f"fd77:{index % 2 + 1}::{rng.randrange(2, 0xfff):x}"
        domain = _DOMAINS[index % len(_DOMAINS)]
        names: tuple[str, ...] = (f"{rng.choice(_HOSTS)}.{domain}",)
        if index % 7 == 0:
            names += (f"alias{index}.{_DOMAINS[(index + 1) % len(_DOMAINS)]}",)
        if index % 11 == 0:
            names = ()
        if index == 23:
            names = (":ns1.example.net",)
        scale = rng.choice((1, 3, 10, 40, 200))
        packets = rng.randrange(50, 4000) * scale
        size = rng.randrange(90, 1400)
        # An hour's traffic: the hourly rates are the exact counts.
        peers.append(Peer(address=address, B=packets * size // 60, C=packets,
                          E=START + 3000 + rng.randrange(600), N=names, R=float(packets),
                          S=START, T=0, W=float(packets * size), packets=packets,
                          bytes=packets * size))
    unique = {p.address: p for p in peers}  # a random collision keeps one peer per address
    return snapshot(tuple(unique.values()), device="eth0", name="edge",
                    filter="not (src net 10.77.0.0/16 and dst net 10.77.0.0/16)",
                    hits_per_minute=sum(round(p.R) for p in unique.values()) // 60,
                    bytes_per_second=round(sum(p.W for p in unique.values()) / 3600),
                    source="/var/lib/ncebpf/edge.json")
