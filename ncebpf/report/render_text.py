"""The text report in upstream's layout (spec §11.3), for people and for SSI pages. Pure.

Byte for byte what Report.pm printed for the same groups — the dump's header,
the title, a block per group (member lines, then `qrys/mn -- bytes/sec --
#IP's  last contact`), the closing rates — so pages that include it through
SSI keep working; its numbers differ only where upstream's were wrong (its
dropped last group, its overwritten domain rows: aggregate's docstring).

A peer name goes into a page as it is, so one that is not a host name
(DNS lets a PTR hold any byte) is shown with its control characters and
`< > & " ' \\` written as upstream's `\\x{hh}`: a hostile name cannot break
the layout or plant markup in the page that includes the report. Host
names, which hold none of them, are unchanged.
"""

from __future__ import annotations

import time

from ncebpf.report.model import Group, Report

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
           "dec")
NAME_SEPARATOR = "\n\t\t"  # a peer's further names, each on a line of its own
TITLE_BLOCK = "\n   IP addr\t    host name\n qrys/mn -- bytes/sec -- #IP's\tlast contact time\n\n"
_ORDER_WORDS = {"bandwidth": "BANDWIDTH", "hits": "HITS", "peers": "PEERS",
                "last": "LAST CONTACT", "packets": "PACKETS", "bytes": "BYTES"}
_UNSAFE = frozenset("<>&\"'\\") | frozenset(map(chr, range(0x20))) | {"\x7f"}


def contact_time(epoch: int) -> str:
    """Upstream's my_time: local time as `apr 04 07:03:09` (month in lower case, no year)."""
    t = time.localtime(epoch)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:" \
           f"{t.tm_sec:02d}"


def safe_name(name: str) -> str:
    """A peer name with what could break a line or a page written as `\\x{hh}`."""
    if not _UNSAFE.intersection(name):
        return name
    return "".join(f"\\x{{{ord(c):x}}}" if c in _UNSAFE else c for c in name)


def title(report: Report) -> str:
    """`Composite report, CIDR/24 ordered by BANDWIDTH` and its kin."""
    options = report.options
    if options.by == "cidr":
        what = f"CIDR/{options.cidr4}"
        if any(":" in p.address for p in report.snapshot.peers):
            what += f", IPv6 /{options.cidr6}"
    elif options.by == "domain":
        what = "SUB DOMAIN" if options.domain_rule == "upstream" else "DOMAIN"
    else:
        what = "PEER"
    return f"Composite report, {what} ordered by {_ORDER_WORDS[options.sort]}"


def _group_lines(group: Group) -> str:
    members = "".join(f"{peer.address}\t{NAME_SEPARATOR.join(map(safe_name, peer.N))}\n"
                      for peer in group.members)
    # Report.pm's printf(" %6.0f\t -- %.0f\t -- %d\t%s\n", ...), rounding included.
    return members + (f" {group.R / 60:6.0f}\t -- {group.W / 3600:.0f}\t -- "
                      f"{len(group.members)}\t{contact_time(group.E)}\n")


def render_text(report: Report) -> str:
    """The report as upstream printed it (spec §11.3), with --top's cut said in one line."""
    totals = report.totals
    hidden = totals.groups - len(report.groups)
    more = f"\n({hidden} more groups, not shown: --top {len(report.groups)})\n" \
        if hidden else ""
    return "".join((
        report.snapshot.header,
        f"\n{title(report)}\n",
        TITLE_BLOCK,
        *map(_group_lines, report.groups),
        more,
        TITLE_BLOCK,
        f"rate\t\t= {totals.R / 60:.0f} connections per minute\n",
        f"bandwidth\t= {totals.W / 3600:.0f} bytes per second\n",
        f"users\t\t= {totals.peers}\n",
    ))
