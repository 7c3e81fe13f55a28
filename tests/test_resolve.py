"""Reverse-DNS answers and limits, without a network (spec §8, §13, §14)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from ncebpf.errors import UsageError
from ncebpf.resolve import (
    MIN_TTL_S,
    RateLimit,
    Server,
    clean_name,
    interpret,
    parse_server,
)

QUESTION = "76.20.33.66.in-addr.arpa."


def answer(rcode: int = dns.rcode.NOERROR, ptrs: tuple[str, ...] = (), ttl: int = 300,
           soa: tuple[int, int] | None = None, truncated: bool = False) -> dns.message.Message:
    query = dns.message.make_query(QUESTION, dns.rdatatype.PTR)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if truncated:
        response.flags |= dns.flags.TC
    if ptrs:
        response.answer.append(dns.rrset.from_text(QUESTION, ttl, "IN", "PTR", *ptrs))
    if soa:
        soa_ttl, minimum = soa
        response.authority.append(dns.rrset.from_text(
            "66.in-addr.arpa.", soa_ttl, "IN", "SOA",
            f"ns.dialtoneinternet.net. hostmaster.example. 1 3600 600 86400 {minimum}"))
    return response


def test_upstream_dns_recv_t_nxdomain_names_the_soa_primary() -> None:
    outcome = interpret(answer(dns.rcode.NXDOMAIN, soa=(45, 3600)))
    assert outcome is not None
    assert outcome.names == [":ns.dialtoneinternet.net"]
    assert outcome.ttl == 45  # RFC 2308: the SOA's TTL, at most its minimum


def test_negative_ttl_is_capped_by_the_soa_minimum() -> None:
    outcome = interpret(answer(dns.rcode.NXDOMAIN, soa=(3600, 120)))
    assert outcome is not None and outcome.ttl == 120


def test_ptr_names_with_reverse_zone_names_dropped() -> None:
    outcome = interpret(answer(ptrs=("b.example.", "a.example.", "x.66.in-addr.arpa."), ttl=77))
    assert outcome is not None
    assert sorted(outcome.names) == ["a.example", "b.example"]
    assert outcome.ttl == 77


def test_reverse_zone_names_are_kept_when_they_are_all_there_is() -> None:
    outcome = interpret(answer(ptrs=("76.20.33.66.in-addr.arpa.",)))
    assert outcome is not None and outcome.names == ["76.20.33.66.in-addr.arpa"]


def test_only_a_real_arpa_suffix_counts() -> None:
    """Upstream's regex had an unescaped dot: `in-addrXarpa.example` matched."""
    outcome = interpret(answer(ptrs=("in-addrXarpa.example.", "ok.example.")))
    assert outcome is not None and sorted(outcome.names) == ["in-addrXarpa.example", "ok.example"]


def test_ttl_zero_does_not_mean_ask_on_every_packet() -> None:
    outcome = interpret(answer(ptrs=("a.example.",), ttl=0))
    assert outcome is not None and outcome.ttl == MIN_TTL_S


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR])
def test_failures_are_not_answers(rcode: int) -> None:
    assert interpret(answer(rcode)) is None


def test_a_truncated_answer_is_asked_again_elsewhere() -> None:
    assert interpret(answer(ptrs=("a.example.",), truncated=True)) is None


def test_nodata_clears_the_names() -> None:
    outcome = interpret(answer(soa=(600, 60)))
    assert outcome is not None and outcome.names == [] and outcome.ttl == 60


@pytest.mark.parametrize("raw", [b"it's", b"back\\slash", b'"quoted"', b"two\nlines",
                                 b"@{[system('id')]}", b"\xff\x00bin"])
def test_hostile_labels_come_out_escaped_and_printable(raw: bytes) -> None:
    text = clean_name(dns.name.Name([raw, b"example", b""]))
    assert text is not None and text.isascii() and text.isprintable()
    assert dns.name.from_text(text) == dns.name.Name([raw, b"example", b""])  # no loss


@pytest.mark.parametrize(("text", "server"), [
    ("10.77.0.2", Server("10.77.0.2", 53)), ("10.77.0.2:5353", Server("10.77.0.2", 5353)),
    ("fd77::2", Server("fd77::2", 53)), ("[fd77::2]:5353", Server("fd77::2", 5353)),
])
def test_parse_server(text: str, server: Server) -> None:
    assert parse_server(text) == server


@pytest.mark.parametrize("bad", ["dns.example", "10.77.0.2:0", "10.77.0.2:x", "[fd77::2]:99999"])
def test_parse_server_refuses(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_server(bad)


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limit = RateLimit(rate=10, burst=3, now=0.0)
    assert [limit.take(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limit.take(0.1) and not limit.take(0.1)
    taken = sum(limit.take(1.0 + i / 1000) for i in range(1000))  # one second of asking
    assert taken <= 3 + 10  # a refilled burst, then the rate
