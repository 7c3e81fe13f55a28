"""The `--http` report server: the reports upstream's CGI served, without CGI.

Routes (README "Serving reports"): `/` and `/index.html` the HTML report,
`/report.txt` the text report in upstream's layout, `/report.json` the JSON
report, each taking `by`, `sort`, `top`, `cidr4`, `cidr6`, `domain_rule`;
`/dump.json` the JSON dump the reports were cut from; `/metrics` the
Prometheus metrics (ncebpf.export.prometheus). GET and HEAD only. The same server,
without the reports, is `--metrics`'s.

The standard library's ThreadingHTTPServer parses HTTP, in a thread of its
own; the counting loop never waits for it: a fresh dump is asked of the
instance over its control socket, as `ncebpf dump` asks, at most once per
refresh interval (upstream's CGI cached its report 60 s), however many
requests arrive, and each page is rendered once per dump.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ncebpf.config import Instance, endpoint_text
from ncebpf.errors import NcebpfError
from ncebpf.listener import DeniedLog, normalise
from ncebpf.report import MEDIA_TYPES, render
from ncebpf.report.aggregate import aggregate
from ncebpf.report.model import BY_CHOICES, DOMAIN_RULES, SORT_CHOICES, Options, Snapshot

log = logging.getLogger(__name__)

ERROR_HOLD_S = 2.0  # a failed fetch answers requests this long before the next try
MAX_PAGES = 64  # rendered pages kept per dump: a bound on what odd queries can pin
MAX_PAGE_BYTES = 128 << 20  # and on their memory: 100 k peers by peer is 44 MB of JSON
REQUEST_TIMEOUT_S = 30.0  # a client silent this long loses its connection (and thread)
HEADER_DEADLINE_S = 10.0  # from accept to the end of the headers, however the bytes trickle
MAX_CLIENTS = 32  # connections served at once; more are closed unanswered
LISTEN_BACKLOG = 64  # connections the kernel queues before accept (the stdlib's 5 is few)
# Methods HTTP defines (RFC 9110 section 9, RFC 5789) that the reports do not take: 405.
OTHER_METHODS = ("POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ALLOW_HEADER = "GET, HEAD"
MAX_TOP_DIGITS = 9
# The page is self-contained: its styles and scripts are inline, charts data: images;
# nothing may be fetched (no URL source is listed), inline style and script may run.
HTML_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "img-src data:")
REPORT_ROUTES = {"/": "html", "/index.html": "html", "/report.txt": "text",
                 "/report.json": "json"}
DUMP_ROUTE = "/dump.json"
METRICS_ROUTE = "/metrics"
# A scrape: the Accept header in, the body and its Content-Type out (Metrics.exposition).
Scrape = Callable[[str], tuple[bytes, str]]


@dataclass(frozen=True)
class Fetched:
    """A fresh dump: what reports read (snapshot) and the JSON file itself (dump)."""

    snapshot: Snapshot
    dump: bytes  # the JSON dump the snapshot was read from, served as /dump.json


@dataclass(frozen=True)
class Page:
    """A response body with its media type (Content-Type, charset included)."""

    body: bytes
    media_type: str


@dataclass(frozen=True)
class Served:
    """A page, the dump it came from, and how long until the next refresh (seconds)."""

    page: Page
    current: int  # the dump's `current`, epoch seconds: Last-Modified
    max_age: int


class BadRequest(ValueError):
    """A query the server refuses, with its one-line reason (400)."""


class FetchFailed(NcebpfError):
    """No fresh dump: the instance's one-line reason (503)."""


class PageCache:
    """Fresh dumps at most every refresh_s seconds, each page rendered once per dump.

    One lock: a request that finds the dump older than refresh_s fetches a
    new one while concurrent requests wait for that same fetch, so there is
    never more than one fetch at a time. A failed fetch is remembered for
    error_hold_s only; the next request after that tries again. At most
    max_pages rendered pages of max_bytes in all are kept per dump; a page
    beyond them is rendered for each request. clock is time.monotonic, or
    a test's fake.
    """

    def __init__(self, fetch: Callable[[], Fetched], refresh_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 error_hold_s: float = ERROR_HOLD_S, max_pages: int = MAX_PAGES,
                 max_bytes: int = MAX_PAGE_BYTES) -> None:
        self._fetch = fetch
        self.refresh_s = refresh_s
        self._clock = clock
        self._error_hold_s = error_hold_s
        self._max_pages = max_pages
        self._max_bytes = max_bytes
        self._page_bytes = 0
        self._lock = threading.Lock()
        self._fetched: Fetched | None = None
        self._fetched_at = -math.inf
        self._error: tuple[str, float] | None = None  # (message, when)
        self._pages: dict[Hashable, Page] = {}

    def _fresh(self, now: float) -> Fetched:
        """The current dump, fetched anew when it is older than refresh_s; under the lock."""
        if self._fetched is not None and now - self._fetched_at < self.refresh_s:
            return self._fetched
        if self._error is not None and now - self._error[1] < self._error_hold_s:
            raise FetchFailed(self._error[0])
        try:
            fetched = self._fetch()
        except (NcebpfError, OSError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._error = (message, now)
            raise FetchFailed(message) from exc
        self._error = None
        self._fetched, self._fetched_at = fetched, self._clock()
        self._pages.clear()
        self._page_bytes = 0
        return fetched

    def serve(self, key: Hashable, make: Callable[[Fetched], Page]) -> Served:
        """The page `key` of a fresh dump, made by `make` unless this dump already has it.

        Raises FetchFailed when no dump could be had; what `make` raises
        passes through.
        """
        with self._lock:
            fetched = self._fresh(self._clock())
            page = self._pages.get(key)
            if page is None:
                page = make(fetched)
                if len(self._pages) < self._max_pages and \
                        self._page_bytes + len(page.body) <= self._max_bytes:
                    self._pages[key] = page
                    self._page_bytes += len(page.body)
            remaining = self._fetched_at + self.refresh_s - self._clock()
            return Served(page, fetched.snapshot.current, max(0, math.ceil(remaining)))


def _integer(name: str, text: str, minimum: int, maximum: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_TOP_DIGITS or \
            not minimum <= int(text) <= maximum:
        raise BadRequest(f"{name}={text!r} is not allowed: an integer from {minimum} to "
                         f"{maximum}")
    return int(text)


def _choice(name: str, text: str, choices: Iterable[str]) -> str:
    if text not in choices:
        raise BadRequest(f"{name}={text!r} is not allowed: one of {', '.join(choices)}")
    return text


def report_options(query: str) -> Options:
    """Options of a report route's query string (`by=domain&top=10`), as `ncebpf report`'s.

    Raises BadRequest for an unknown or repeated parameter or a bad value.
    """
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                          max_num_fields=16)
    except ValueError:
        raise BadRequest("the query is not name=value pairs joined by &") from None
    values: dict[str, Any] = {}
    for name, given in fields.items():
        if len(given) > 1:
            raise BadRequest(f"{name} is given {len(given)} times: give it once")
        text = given[0]
        if name == "by":
            values[name] = _choice(name, text, BY_CHOICES)
        elif name == "sort":
            values[name] = _choice(name, text, SORT_CHOICES)
        elif name == "domain_rule":
            values[name] = _choice(name, text, DOMAIN_RULES)
        elif name == "top":
            values[name] = _integer(name, text, 1, 10 ** MAX_TOP_DIGITS - 1)
        elif name == "cidr4":
            values[name] = _integer(name, text, 0, 32)
        elif name == "cidr6":
            values[name] = _integer(name, text, 0, 128)
        else:
            raise BadRequest(f"unknown parameter {name!r}: by, sort, top, cidr4, cidr6 or "
                             "domain_rule")
    return Options(**values)


def report_page(fmt: str, options: Options) -> Callable[[Fetched], Page]:
    """How to make a report page of a dump: aggregate, then render in fmt."""
    def make(fetched: Fetched) -> Page:
        text = render(aggregate(fetched.snapshot, options), fmt)
        return Page(text.encode(), MEDIA_TYPES[fmt])
    return make


def dump_page(fetched: Fetched) -> Page:
    return Page(fetched.dump, MEDIA_TYPES["json"])


def fetch_from_instance(instance: Instance, timeout_s: float) -> Fetched:
    """A fresh JSON dump of the running instance, asked as `ncebpf dump` asks, and read back
    (sources.dump_of_instance): the reports and /dump.json come from the same bytes.
    Raises NcebpfError (NotRunning, the instance's own reason, an unreadable dump)."""
    from ncebpf.report.sources import dump_of_instance

    return Fetched(*dump_of_instance(instance, timeout_s))


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on its threads: a flood of connections costs the
    daemon at most MAX_CLIENTS threads, not one per connection; refused clients cost none."""

    daemon_threads = True  # a slow client never holds up the daemon's exit
    request_queue_size = LISTEN_BACKLOG
    cache: PageCache | None  # None: no reports, /metrics alone (--metrics)
    scrape: Scrape | None
    allowed: frozenset[str] | None  # None: everyone who can connect
    denied: DeniedLog  # only verify_request uses it, in the one accepting thread: no lock
    slots: threading.BoundedSemaphore
    header_deadline_s: float

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # At accept, before a thread or a slot is given: a refused client is closed at once
        # (socketserver shuts the connection), so refused clients cannot crowd allowed ones
        # out of the MAX_CLIENTS slots.
        if self.allowed is None:
            return True
        client = normalise(client_address[0])
        if client in self.allowed:
            return True
        self.denied.refused(client, time.time())
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread took the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback on stderr. A client that hangs up early is
        # ordinary and any local client can do it at will: one DEBUG line, no flood.
        # Anything else is one WARNING line; its traceback only when debugging.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("report request from %s: the client went away (%s)", client_address[0],
                      type(exc).__name__)
            return
        log.warning("report request from %s failed: %s: %s", client_address[0],
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                    exc_info=log.isEnabledFor(logging.DEBUG))


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "ncebpf"

    def setup(self) -> None:
        # The socket timeout (REQUEST_TIMEOUT_S) bounds each read, not the request: a client
        # sending a byte every 20 s would hold its slot forever. A watchdog shuts the socket
        # down at the deadline instead: shutdown() from another thread wakes the handler's
        # blocked read with end-of-file at once, whatever the stdlib's parser is reading,
        # so no read of ours or of http.server's needs to know about the deadline.
        super().setup()
        self._headers_read = False
        self._watch_lock = threading.Lock()
        self._watchdog = threading.Timer(self.server.header_deadline_s, self._too_slow)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _too_slow(self) -> None:
        with self._watch_lock:  # the headers may have been read just now: then leave it be
            if self._headers_read:
                return
            log.debug("http %s: no complete request in %g s: closed", self.client_address[0],
                      self.server.header_deadline_s)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        with self._watch_lock:
            self._headers_read = True
        self._watchdog.cancel()
        return parsed

    def finish(self) -> None:
        self._watchdog.cancel()
        super().finish()

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _not_allowed(self) -> None:
        """Methods HTTP defines but the reports do not take: 405 (RFC 9110 section 15.5.6)."""
        self._plain(HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{self.command} is not allowed here: {ALLOW_HEADER} only\n", True,
                    ("Allow", ALLOW_HEADER))

    do_POST = do_PUT = do_DELETE = do_CONNECT = do_OPTIONS = do_TRACE = do_PATCH = _not_allowed

    def _respond(self, body: bool) -> None:
        server = self.server
        client = normalise(self.client_address[0])
        url = urlsplit(self.path)
        try:
            if url.path == METRICS_ROUTE and server.scrape is not None:
                data, media_type = server.scrape(self.headers.get("Accept", ""))
                self._send(data, media_type, body, ("Cache-Control", "no-store"))
                return
            if url.path in REPORT_ROUTES and server.cache is not None:
                fmt = REPORT_ROUTES[url.path]
                options = report_options(url.query)
                served = server.cache.serve((fmt, options), report_page(fmt, options))
            elif url.path == DUMP_ROUTE and server.cache is not None:
                if url.query:
                    raise BadRequest(f"{DUMP_ROUTE} takes no parameters")
                served = server.cache.serve(DUMP_ROUTE, dump_page)
            else:
                routes = ["/", "/report.txt", "/report.json", DUMP_ROUTE] \
                    if server.cache is not None else []
                routes += [METRICS_ROUTE] if server.scrape is not None else []
                self._plain(HTTPStatus.NOT_FOUND,
                            f"no page {url.path[:80]!r}: {', '.join(routes)}\n", body)
                return
        except BadRequest as exc:
            self._plain(HTTPStatus.BAD_REQUEST, f"{exc}\n", body)
            return
        except FetchFailed as exc:
            self._plain(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n", body)
            return
        except Exception:  # a renderer's bug: the client hears of it, the log has the trace
            log.exception("report %s for %s failed", self.path[:200], client)
            self._plain(HTTPStatus.INTERNAL_SERVER_ERROR,
                        "the report failed: see the instance's log\n", body)
            return
        page = served.page
        headers = [("Cache-Control", f"max-age={served.max_age}"),
                   ("Last-Modified", email.utils.formatdate(served.current, usegmt=True))]
        if page.media_type.startswith("text/html"):
            headers.append(("Content-Security-Policy", HTML_POLICY))
        self._send(page.body, page.media_type, body, *headers)

    def _send(self, data: bytes, media_type: str, body: bool,
              *headers: tuple[str, str]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        for header in headers:
            self.send_header(*header)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _plain(self, status: HTTPStatus, text: str, body: bool,
               *headers: tuple[str, str]) -> None:
        data = text.encode()
        self.send_response(status)
        for header in headers:
            self.send_header(*header)
        self.send_header("Content-Type", MEDIA_TYPES["text"])
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)


class ReportServer:
    """The report server, from __enter__ to __exit__, in a thread of its own.

    address is an IP address (IPv4 or IPv6), port 0 an ephemeral one
    (`port` tells which once entered). allowed is who may connect (addresses,
    normalised), whatever the bound address; None is everyone who can reach
    it (the caller passes None only for a loopback address without --allow).
    Others are closed at accept, unanswered, and logged at most once a minute.
    At most max_clients connections are served at once (more are closed
    unanswered); each must send its request line and headers within
    header_deadline_s of being accepted and is dropped after
    REQUEST_TIMEOUT_S of silence. fetch gives a fresh dump
    (`Fetched`); it is called at most every refresh_s seconds, from a
    request's thread; None serves no reports (`--metrics`). scrape, when
    given, answers /metrics. Entering raises NcebpfError when the address
    cannot be bound.
    """

    def __init__(self, address: str, port: int, fetch: Callable[[], Fetched] | None,
                 refresh_s: float, allowed: Iterable[str] | None,
                 max_clients: int = MAX_CLIENTS,
                 header_deadline_s: float = HEADER_DEADLINE_S,
                 scrape: Scrape | None = None) -> None:
        self.address, self.port = address, port
        self.max_clients = max_clients
        self.header_deadline_s = header_deadline_s
        self.cache = PageCache(fetch, refresh_s) if fetch is not None else None
        self.scrape = scrape
        self.allowed = None if allowed is None else frozenset(map(normalise, allowed))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ReportServer:
        server_class = _Server6 if ":" in self.address else _Server
        try:
            server = server_class((self.address, self.port), _Handler)
        except OSError as exc:
            what, flag = ("reports", "--http") if self.cache is not None else \
                ("metrics", "--metrics")
            raise NcebpfError(f"could not serve {what} on "
                              f"{endpoint_text(self.address, self.port)}: "
                              f"{exc.strerror or exc} (choose another {flag})") from None
        server.cache, server.scrape, server.allowed = self.cache, self.scrape, self.allowed
        server.denied = DeniedLog(what="report request" if self.cache is not None else
                                  "metrics request")
        server.slots = threading.BoundedSemaphore(self.max_clients)
        server.header_deadline_s = self.header_deadline_s
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="ncebpf-http",
                                        daemon=True)
        self._thread.start()
        who = "everyone who can connect" if self.allowed is None else \
            "allowed: " + ", ".join(sorted(self.allowed))
        if self.cache is not None:
            log.info("serving reports%s on %s, from a dump at most %g s old; %s",
                     " and metrics" if self.scrape else "", self.url, self.cache.refresh_s, who)
        else:
            log.info("serving Prometheus metrics on %s%s; %s", self.url,
                     METRICS_ROUTE.lstrip("/"), who)
        return self

    @property
    def url(self) -> str:
        return f"http://{endpoint_text(self.address, self.port)}/"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
