"""The --http report server: its address setting, its cache, its routes (no root needed)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.config import ConfigError, build, http_endpoint, read_file, to_toml
from ncebpf.dump import DumpContext, json_document, render_json
from ncebpf.errors import NcebpfError
from ncebpf.http import (
    HTML_POLICY,
    LISTEN_BACKLOG,
    MAX_CLIENTS,
    BadRequest,
    Fetched,
    FetchFailed,
    Page,
    PageCache,
    ReportServer,
    report_options,
)
from ncebpf.report.model import Options
from ncebpf.report.sources import parse_dump
from tests.netns import TIME_SCALE

CONTEXT = DumpContext("web", "eth1", "tc", filter="udp")


# --- the setting -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "endpoint"), [
    ("8080", ("127.0.0.1", 8080)),
    ("10.77.0.1:80", ("10.77.0.1", 80)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("[fd77::1]:8080", ("fd77::1", 8080)),
    ("[::1]:1", ("::1", 1)),
])
def test_http_endpoint_reads_port_addr_port_and_bracketed_v6(
        text: str, endpoint: tuple[str, int]) -> None:
    assert http_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["0", "65536", "x", "10.77.0.1", "10.77.0.1:", ":80",
                                  "localhost:80", "fd77::1:80", "[10.77.0.1]:80", "[fd77::1]",
                                  "[fd77::1]80", "10.77.0.1:-1", "10.77.0.256:80", "\u00b2"])
def test_http_endpoint_refuses_what_is_not_an_address_and_port(text: str) -> None:
    with pytest.raises(ValueError):
        http_endpoint(text)


def _build(tmp_path: Path, **settings: Any) -> Any:
    settings = {"iface": "lo", "statedir": str(tmp_path), "piddir": str(tmp_path), **settings}
    return build(settings, "web", [], lambda host: [host] if host[0].isdigit() else [])


def test_http_settings_are_checked_like_every_other(tmp_path: Path) -> None:
    config = _build(tmp_path, http="[fd77:0::1]:8080", http_refresh_s=5)
    assert (config.http, config.http_refresh_s) == ("[fd77::1]:8080", 5)
    assert _build(tmp_path, http="8080").http == "127.0.0.1:8080"
    assert _build(tmp_path).http == "" and _build(tmp_path).http_refresh_s == 60
    with pytest.raises(ConfigError) as bad:
        _build(tmp_path, http="localhost:8080")
    assert str(bad.value) == ('config: http: "localhost:8080" is not an address and port '
                              '(PORT, ADDR:PORT or [V6ADDR]:PORT with an IP address, in '
                              'quotes; flag --http)')
    with pytest.raises(ConfigError) as bad:
        _build(tmp_path, http_refresh_s=0)
    assert str(bad.value) == ("config: http_refresh: 0 is out of range (an integer of seconds "
                              "from 1 to 86400; flag --http-refresh)")
    with pytest.raises(ConfigError, match="is not a string"):
        _build(tmp_path, http=8080)


def test_allowed_is_resolved_for_the_http_server_as_for_the_udp_listener(
        tmp_path: Path) -> None:
    assert _build(tmp_path, allow=["10.77.0.9"]).allow == ()  # neither: upstream ignores it
    assert _build(tmp_path, allow=["10.77.0.9"], http="10.77.0.1:80").allow == ("10.77.0.9",)
    with pytest.raises(ConfigError, match="invalid 'allowed' host or IP 'nowhere'"):
        _build(tmp_path, allow=["nowhere"], http="8080")


def test_the_effective_configuration_names_the_http_settings_and_reads_back(
        tmp_path: Path) -> None:
    config = _build(tmp_path, http="[::1]:8080", http_refresh_s=7)
    text = to_toml(config)
    assert 'http = "[::1]:8080"\n' in text and "http_refresh = 7\n" in text
    path = tmp_path / "web.toml"
    path.write_text(text)
    settings = read_file(path)
    assert (settings["http"], settings["http_refresh_s"]) == ("[::1]:8080", 7)


# --- the cache ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample_table() -> PeerTable:
    table = PeerTable(start=1000)
    table.add(peer_key("10.77.1.2"), 3, 330, 1001, 1010)
    table.add(peer_key("10.77.1.3"), 2, 200, 1002, 1003)
    table.add(peer_key("10.77.2.9"), 5, 700, 1004, 1004)
    table.add(peer_key("fd77::2"), 7, 1010, 1005, 1006)
    table.peers[peer_key("10.77.1.2")].N = ["a.example.com"]
    table.peers[peer_key("10.77.2.9")].N = ["b.example.com"]
    table.totals = Totals(packets=17, bytes=2240)
    return table


def fetched_at(now: float) -> Fetched:
    """A fresh dump as the daemon's fetch gives one: a real table, rendered, read back."""
    text = render_json(json_document(sample_table(), CONTEXT, now))
    return Fetched(parse_dump(text, "instance web"), text.encode())


class CountingFetch:
    def __init__(self, clock: Clock, fail: bool = False) -> None:
        self.clock, self.fail, self.calls = clock, fail, 0

    def __call__(self) -> Fetched:
        self.calls += 1
        if self.fail:
            raise NcebpfError("instance 'web' said nothing for 5 s while writing the dump")
        return fetched_at(self.clock.now)


def page_of(fetched: Fetched) -> Page:
    return Page(str(fetched.snapshot.current).encode(), "text/plain; charset=utf-8")


def test_a_dump_serves_every_request_until_the_refresh_interval_is_over() -> None:
    clock = Clock()
    fetch = CountingFetch(clock)
    cache = PageCache(fetch, refresh_s=60, clock=clock)
    first = cache.serve("a", page_of)
    assert (first.page.body, first.current, first.max_age, fetch.calls) == \
        (b"1000", 1000, 60, 1)
    clock.now = 1059.2
    later = cache.serve("a", page_of)
    assert (later.page.body, later.max_age, fetch.calls) == (b"1000", 1, 1)
    clock.now = 1060.0
    assert cache.serve("a", page_of).page.body == b"1060" and fetch.calls == 2


def test_a_page_is_rendered_once_per_dump() -> None:
    clock = Clock()
    cache = PageCache(CountingFetch(clock), refresh_s=10, clock=clock)
    renders: list[str] = []

    def make(key: str) -> Callable[[Fetched], Page]:
        def render(fetched: Fetched) -> Page:
            renders.append(key)
            return page_of(fetched)
        return render

    for key in ("a", "b", "a", "b", "a"):
        cache.serve(key, make(key))
    assert renders == ["a", "b"]
    clock.now += 10
    cache.serve("a", make("a"))
    assert renders == ["a", "b", "a"]


def test_pages_beyond_the_bound_are_rendered_but_not_kept() -> None:
    clock = Clock()
    cache = PageCache(CountingFetch(clock), refresh_s=10, clock=clock, max_pages=2)
    renders: list[int] = []

    def make(key: int) -> Callable[[Fetched], Page]:
        def render(fetched: Fetched) -> Page:
            renders.append(key)
            return page_of(fetched)
        return render

    for key in (1, 2, 3, 3, 1):
        cache.serve(key, make(key))
    assert renders == [1, 2, 3, 3]


def test_pages_beyond_the_byte_budget_are_rendered_but_not_kept() -> None:
    clock = Clock()
    cache = PageCache(CountingFetch(clock), refresh_s=10, clock=clock, max_bytes=7)
    renders: list[str] = []

    def make(key: str) -> Callable[[Fetched], Page]:
        def render(fetched: Fetched) -> Page:
            renders.append(key)
            return page_of(fetched)  # 4 bytes: b"1000"
        return render

    for key in ("a", "b", "b", "a"):
        cache.serve(key, make(key))
    assert renders == ["a", "b", "b"]
    clock.now += 10  # a new dump starts with the whole budget
    for key in ("b", "b"):
        cache.serve(key, make(key))
    assert renders == ["a", "b", "b", "b"]


def test_concurrent_requests_share_one_fetch() -> None:
    clock = Clock()
    release = threading.Event()
    entered = threading.Event()
    calls = 0

    def slow_fetch() -> Fetched:
        nonlocal calls
        calls += 1
        entered.set()
        assert release.wait(10)
        return fetched_at(clock.now)

    cache = PageCache(slow_fetch, refresh_s=60, clock=clock)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(cache.serve("a", page_of).page.body))
               for _ in range(8)]
    threads[0].start()
    assert entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == 1 and bodies == [b"1000"] * 8


def test_a_failed_fetch_is_answered_briefly_then_tried_again() -> None:
    clock = Clock()
    fetch = CountingFetch(clock, fail=True)
    cache = PageCache(fetch, refresh_s=60, clock=clock, error_hold_s=2)
    with pytest.raises(FetchFailed, match="said nothing for 5 s"):
        cache.serve("a", page_of)
    clock.now += 1.5
    with pytest.raises(FetchFailed):
        cache.serve("a", page_of)
    assert fetch.calls == 1
    clock.now += 0.5
    fetch.fail = False
    assert cache.serve("a", page_of).page.body == b"1002" and fetch.calls == 2


# --- the query ---------------------------------------------------------------------------


def test_report_options_take_the_report_command_s_choices() -> None:
    assert report_options("") == Options()
    assert report_options("by=domain&sort=hits&top=3&cidr4=16&cidr6=32&domain_rule=upstream") \
        == Options(by="domain", sort="hits", top=3, cidr4=16, cidr6=32, domain_rule="upstream")


@pytest.mark.parametrize(("query", "message"), [
    ("by=asn", "by='asn' is not allowed: one of cidr, domain, peer"),
    ("top=0", "top='0' is not allowed: an integer from 1 to 999999999"),
    ("top=-1", "top='-1' is not allowed"),
    ("top=1e3", "top='1e3' is not allowed"),
    ("top=%C2%B2", "top='\u00b2' is not allowed"),
    ("cidr4=33", "cidr4='33' is not allowed: an integer from 0 to 32"),
    ("cidr6=129", "cidr6='129' is not allowed: an integer from 0 to 128"),
    ("sort=size", "sort='size' is not allowed"),
    ("domain_rule=x", "domain_rule='x' is not allowed: one of psl, upstream"),
    ("by=cidr&by=peer", "by is given 2 times: give it once"),
    ("group=1", "unknown parameter 'group'"),
    ("by", "the query is not name=value pairs"),
])
def test_report_options_refuse_with_one_line(query: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")) as refused:
        report_options(query)
    assert "\n" not in str(refused.value)


# --- the server --------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def get(server: ReportServer, path: str, method: str = "GET") -> Response:
    request = urllib.request.Request(server.url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


@pytest.fixture
def served() -> Iterator[tuple[ReportServer, CountingFetch]]:
    fetch = CountingFetch(Clock())
    with ReportServer("127.0.0.1", 0, fetch, 60, allowed=None) as server:
        yield server, fetch


def test_the_json_report_s_totals_are_the_dump_s(
        served: tuple[ReportServer, CountingFetch]) -> None:
    server, fetch = served
    answer = get(server, "/report.json")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Content-Length"] == str(len(answer.body))
    assert answer.headers["Cache-Control"] == "max-age=60"
    assert answer.headers["Last-Modified"] == "Thu, 01 Jan 1970 00:16:40 GMT"  # current 1000
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    report = answer.json()
    assert (report["totals"]["packets"], report["totals"]["bytes"]) == (17, 2240)
    assert (report["totals"]["peers"], report["totals"]["groups"]) == (4, 3)
    dump = get(server, "/dump.json")
    assert dump.status == 200 and dump.headers["Content-Type"] == "application/json"
    document = dump.json()
    assert sum(p["packets"] for p in document["peers"].values()) == 17
    assert sum(p["bytes"] for p in document["peers"].values()) == 2240
    assert document["current"] == report["dump"]["current"] == 1000
    assert fetch.calls == 1


def test_queries_cut_the_report(served: tuple[ReportServer, CountingFetch]) -> None:
    server, _ = served
    by_peer = get(server, "/report.json?by=peer&top=2").json()
    assert (by_peer["by"], by_peer["totals"]["groups"], len(by_peer["groups"])) == ("peer", 4, 2)
    by_domain = get(server, "/report.json?by=domain").json()
    assert sorted(g["key"] for g in by_domain["groups"]) == ["(no name)", "example.com"]
    text = get(server, "/report.txt?by=domain")
    assert text.status == 200 and text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Composite report, DOMAIN ordered by BANDWIDTH" in text.body.decode()
    assert "users\t\t= 4\n" in text.body.decode()


def test_head_gives_the_headers_of_get_without_the_body(
        served: tuple[ReportServer, CountingFetch]) -> None:
    server, _ = served
    whole, head = get(server, "/report.txt"), get(server, "/report.txt", "HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(whole.body))
    assert head.headers["Content-Type"] == whole.headers["Content-Type"]


def test_the_html_report_is_served_as_a_self_contained_page(
        served: tuple[ReportServer, CountingFetch]) -> None:
    server, _ = served
    for path in ("/", "/index.html", "/?by=domain"):
        page = get(server, path)
        assert page.status == 200, page.body
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Content-Security-Policy"] == HTML_POLICY
        assert "2240" in page.body.decode() or "2,240" in page.body.decode()


def test_unknown_paths_bad_queries_and_other_methods_are_refused(
        served: tuple[ReportServer, CountingFetch]) -> None:
    server, fetch = served
    missing = get(server, "/cgi-bin/report.cgi")
    assert missing.status == 404 and missing.body.startswith(b"no page '/cgi-bin/report.cgi'")
    bad = get(server, "/report.json?top=zero")
    assert bad.status == 400
    assert bad.body == b"top='zero' is not allowed: an integer from 1 to 999999999\n"
    assert bad.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert get(server, "/dump.json?by=peer").status == 400
    assert fetch.calls == 0  # nothing above needed a dump


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_methods_other_than_get_and_head_are_405_with_the_allowed_ones(
        served: tuple[ReportServer, CountingFetch], method: str) -> None:
    server, fetch = served
    answer = get(server, "/report.json", method)
    assert answer.status == 405
    assert answer.headers["Allow"] == "GET, HEAD"
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.body == f"{method} is not allowed here: GET, HEAD only\n".encode()
    assert fetch.calls == 0


def test_a_failed_fetch_is_a_503_with_the_instance_s_reason() -> None:
    fetch = CountingFetch(Clock(), fail=True)
    with ReportServer("127.0.0.1", 0, fetch, 60, allowed=None) as server:
        answer = get(server, "/report.txt")
    assert answer.status == 503
    assert answer.body == b"instance 'web' said nothing for 5 s while writing the dump\n"
    assert answer.headers["Cache-Control"] == "no-store"


def closed_unanswered(port: int, source: str = "127.0.0.1") -> bool:
    """Whether the server closes a connection from source without a byte of answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as connection:
        try:
            connection.sendall(b"GET /report.txt HTTP/1.0\r\n\r\n")
            return connection.recv(100) == b""
        except ConnectionError:
            return True


def get_from(server: ReportServer, source: str, path: str) -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return Response(answer.status, answer.headers, answer.read())
    finally:
        connection.close()


def test_an_allowed_list_is_applied_on_any_address_loopback_too(
        caplog: pytest.LogCaptureFixture) -> None:
    # 127.0.0.0/8 is loopback: a client may send from 127.0.0.2 as well as from 127.0.0.1.
    fetch = CountingFetch(Clock())
    with caplog.at_level(logging.WARNING, "ncebpf"), \
            ReportServer("127.0.0.1", 0, fetch, 60, allowed=["127.0.0.2"]) as server:
        assert closed_unanswered(server.port, "127.0.0.1")
        assert get_from(server, "127.0.0.2", "/report.txt").status == 200
    assert fetch.calls == 1
    assert [r.getMessage() for r in caplog.records] == [
        "refused a report request from 127.0.0.1: not in the allowed list"]


def test_refused_clients_are_closed_at_accept_and_take_no_slot(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "ncebpf"), \
            ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=["127.0.0.2"],
                         max_clients=2) as server:
        # Refused clients that stay connected, silent, many more than there are slots.
        refused = [socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                            source_address=("127.0.0.1", 0))
                   for _ in range(10)]
        try:
            for connection in refused:
                assert connection.recv(100) == b""  # closed by the server, unanswered
            answers = [get_from(server, "127.0.0.2", "/report.txt") for _ in range(3)]
        finally:
            for connection in refused:
                connection.close()
    assert [a.status for a in answers] == [200] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["refused a report request from 127.0.0.1: not in the allowed list"]


def drip(port: int, stop: threading.Event, every_s: float,
         connected: threading.Semaphore) -> bool:
    """A client that sends its request line a byte at a time and never ends its headers;
    True when the server closed the connection before stop was set."""
    request = b"GET /report.txt HTTP/1.0\r\nX-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connected.release()
        connection.settimeout(every_s)
        for byte in request:
            try:
                connection.sendall(bytes([byte]))
                if connection.recv(100) == b"":
                    return True
            except TimeoutError:
                pass  # nothing from the server yet: still connected
            except ConnectionError:
                return True
            if stop.is_set():
                return False
    return False


def listen_backlog(port: int) -> int:
    """Connections to 127.0.0.1:port the server has not accepted yet (ss's Recv-Q)."""
    out = subprocess.run(["ss", "-ltnH", "sport", "=", f":{port}"], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[1])


def test_drip_feeding_clients_lose_their_slots_at_the_header_deadline() -> None:
    # Long enough for 32 connections to be accepted on a loaded machine before the first
    # is cut: the test needs every slot held at once.
    deadline_s = 6.0 * TIME_SCALE
    with ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None,
                      header_deadline_s=deadline_s) as server:
        assert server.max_clients == MAX_CLIENTS
        stop = threading.Event()
        cut: list[bool] = []
        idle = [socket.create_connection(("127.0.0.1", server.port))
                for _ in range(MAX_CLIENTS // 2)]
        connected = threading.Semaphore(0)
        drippers = [threading.Thread(
            target=lambda: cut.append(drip(server.port, stop, 0.2, connected)))
            for _ in range(MAX_CLIENTS - len(idle))]
        try:
            for thread in drippers:
                thread.start()
            # Probe only once every dripper is connected and accepted: a probe served
            # meanwhile would hold a slot, and a dripper refused then would never hold one.
            for _ in drippers:
                assert connected.acquire(timeout=deadline_s / 2)
            while listen_backlog(server.port):
                time.sleep(0.01)
            # Every slot is held (idle or dripping, well within the 30 s per-read timeout).
            assert closed_unanswered(server.port)
            answer = None
            give_up = threading.Event()
            threading.Timer(deadline_s + 8 * TIME_SCALE, give_up.set).start()  # a liveness bound
            while answer is None and not give_up.is_set():
                answer = get_or_none(server, "/report.txt")
                if answer is None:
                    give_up.wait(0.05)
            assert answer is not None and answer.status == 200
            for connection in idle:
                connection.settimeout(10)
                assert connection.recv(100) == b""  # closed at the deadline, unanswered
            for thread in drippers:  # each cut at its own deadline, accepted a little later
                thread.join(timeout=deadline_s)
        finally:
            stop.set()
            for thread in drippers:
                thread.join()
            for connection in idle:
                connection.close()
    assert cut == [True] * len(drippers)


def test_the_listen_backlog_is_larger_than_the_stdlib_s() -> None:
    with ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None) as server:
        assert server._server is not None
        assert server._server.request_queue_size == LISTEN_BACKLOG == 64


def test_a_client_that_hangs_up_early_is_one_debug_line(
        caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    counting = CountingFetch(Clock())

    def held_fetch() -> Fetched:
        release.wait(10)  # until the client has reset the connection
        return counting()

    with caplog.at_level(logging.DEBUG, "ncebpf"), \
            ReportServer("127.0.0.1", 0, held_fetch, 60, allowed=None) as server:
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(b"GET /report.txt HTTP/1.0\r\n\r\n")
        # Linger 0: close sends a reset, so the server's answer finds the client gone.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        threading.Event().wait(0.2)  # the request is read: the handler waits for the dump
        connection.close()
        threading.Event().wait(0.2)  # the reset has arrived
        release.set()
        for _ in range(200):
            gone = [r for r in caplog.records if "went away" in r.getMessage()]
            if gone:
                break
            threading.Event().wait(0.05)
    assert [r.levelno for r in gone] == [logging.DEBUG]
    assert gone[0].exc_info is None and "\n" not in gone[0].getMessage()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(("level", "traceback"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_other_request_errors_are_one_warning_line_traceback_only_when_debugging(
        caplog: pytest.LogCaptureFixture, level: int, traceback: bool) -> None:
    with caplog.at_level(level, "ncebpf"), \
            ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None) as server:
        assert server._server is not None
        try:
            raise ValueError("odd bytes\nsecond line")
        except ValueError:
            server._server.handle_error(None, ("127.0.0.9", 1234))
    (record,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "report request from 127.0.0.9 failed: ValueError: odd bytes"
    assert bool(record.exc_info) == traceback


def test_ipv6_loopback_is_served() -> None:
    with ReportServer("::1", 0, CountingFetch(Clock()), 60, allowed=None) as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server, "/report.json").json()["totals"]["packets"] == 17


def test_a_busy_address_is_one_line_naming_it() -> None:
    with ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None) as server, \
            pytest.raises(NcebpfError) as busy:
        ReportServer("127.0.0.1", server.port, CountingFetch(Clock()), 60, allowed=None) \
            .__enter__()
    assert str(busy.value) == (f"could not serve reports on 127.0.0.1:{server.port}: Address "
                               "already in use (choose another --http)")


def test_leaving_stops_serving() -> None:
    with ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None) as server:
        url = server.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_connections_beyond_the_bound_are_closed_until_a_slot_is_free() -> None:
    with ReportServer("127.0.0.1", 0, CountingFetch(Clock()), 60, allowed=None,
                      max_clients=2) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            refused = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with refused:
                assert refused.recv(100) == b""  # closed unanswered: both slots are taken
        finally:
            for connection in silent:
                connection.close()
        for _ in range(100):  # the two threads see their clients hang up, then free a slot
            answer = get_or_none(server, "/report.txt")
            if answer is not None:
                break
            threading.Event().wait(0.05)
        assert answer is not None and answer.status == 200


def get_or_none(server: ReportServer, path: str) -> Response | None:
    try:
        return get(server, path)
    except (urllib.error.URLError, ConnectionError, http.client.RemoteDisconnected):
        return None
