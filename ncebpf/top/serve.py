"""The daemon answers `ncebpf top`: a drain when the counters are stale, an answer cut
with numpy on the loop, its bytes sent by a short thread.

Freshness: a drain runs every --interval seconds (default 5), too seldom for
2-second averages. A request says how old its counts may be (`top` asks for
0.9 of its refresh interval); when the last drain is older, or when the caller
has already seen it (its cursor is the latest), the daemon drains first (as a
dump does), so a `top` refreshing every second sees counters at
most a second old, one refreshing every 5 s seldom adds a drain, and several
`top`s share drains: however many ask, the daemon drains at most every
FRESH_S for them. The answer's time is
the drain's, when it read the maps (DrainReport.read_at, not when its sinks
ran): the client divides by the time between two reads, not between
requests, nor between the ends of drains of varying length.

The loop never waits for a client: the payload (6 MB at 100 000 peers) goes
out from a thread of its own, which gives up on a client that reads nothing
for SEND_TIMEOUT_S; at most MAX_SENDERS answers are in flight, and a request
beyond them is told to come back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ncebpf.collector import DrainReport
from ncebpf.control import ChangesRequest
from ncebpf.top.feed import ChangeFeed
from ncebpf.top.wire import Header, encode

log = logging.getLogger(__name__)

FRESH_S = 0.5  # the freshest counts a request gets: drains for requests at most this often
SEND_TIMEOUT_S = 10.0
MAX_SENDERS = 8


class TopService:
    """The loop's side. header() gives the instance's fields as of now (cursor and
    `full` are the feed's); drain() drains now, or returns False when drains are held
    (a HUP's dump: the counters then stay as they are); clock is monotonic seconds."""

    def __init__(self, feed: ChangeFeed, header: Callable[[float], Header],
                 drain: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._feed, self._header, self._drain = feed, header, drain
        self._clock, self._wall = clock, wall
        self._drained_at = clock()
        self._drained_time = wall()  # epoch seconds of the last drain: the counts' time
        self._senders: list[threading.Thread] = []
        self.answered = 0

    def drained(self, report: DrainReport) -> None:
        """A sink of the drain: stamp what moved (while anyone asks). The counts are as of
        report.read_at (epoch s; a report without one: now)."""
        self._drained_at = self._clock()
        self._drained_time = report.read_at or self._wall()
        self._feed.update()
        self._feed.sleep_if_idle()

    def answer(self, request: ChangesRequest) -> None:
        """Answer one request; returns as soon as its bytes are handed to a thread."""
        self._senders = [t for t in self._senders if t.is_alive()]
        if len(self._senders) >= MAX_SENDERS:
            request.refuse(f"{MAX_SENDERS} answers are still being sent: ask again")
            return
        max_age = FRESH_S if request.max_age_s is None else max(FRESH_S, request.max_age_s)
        age = self._clock() - self._drained_at
        # A caller that has seen the last drain gets a new one (FRESH_S apart): else a
        # request that came soon after a slow drain's end got that drain again.
        if age >= max_age or age >= FRESH_S and self._feed.is_current(request.cursor):
            self._drain()
        header, records, names = self._feed.answer(request.cursor,
                                                   self._header(self._drained_time))
        payload = encode(header, records, names)
        sender = threading.Thread(target=_send, args=(request, payload),
                                  name="ncebpf-top-answer", daemon=True)
        sender.start()
        self._senders.append(sender)
        self.answered += 1


def _send(request: ChangesRequest, payload: bytes) -> None:
    conn = request.conn
    try:
        conn.setblocking(True)
        conn.settimeout(SEND_TIMEOUT_S)
        conn.sendall(payload)
    except OSError as exc:  # gone, or too slow: its next request starts over
        log.debug("a top client left before its answer was sent: %s", exc)
    finally:
        conn.close()
