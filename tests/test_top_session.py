"""`ncebpf top`'s session and loops (ncebpf.top.screen) against a fake instance: an instance
that restarts, goes away and comes back, --batch's lines, the keys, the end on signals.
No root, no terminal."""

from __future__ import annotations

import io
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ncebpf.accounting import peer_key
from ncebpf.config import Instance
from ncebpf.errors import NcebpfError, NotRunning
from ncebpf.top import screen
from ncebpf.top.screen import Ended, Session, _Keyboard, ending_on_signals, split_keys
from ncebpf.top.view import ViewOptions
from ncebpf.top.wire import RECORD, Header, Records

A = peer_key("10.77.0.2")


class Instance_:
    """Answers as a daemon would: a session id, a clock of drains, one peer sending
    1000 bytes/s; `down` raises what the client raises when nothing listens."""

    def __init__(self) -> None:
        self.session, self.seq, self.time, self.bytes, self.down = "s1", 0, 1000.0, 0, False
        self.start = 900  # the table's start: a HUP makes another
        self.asked = 0
        self.ages: list[float | None] = []

    def __call__(self, instance: Instance, cursor: str, timeout_s: float,
                 max_age_s: float | None = None) -> tuple[Header, Records, dict[int, list[str]]]:
        self.asked += 1
        self.ages.append(max_age_s)
        if self.down:
            raise NotRunning("no ncebpf instance named 't' is running")
        self.seq += 1
        self.time += 1.0
        self.bytes += 1000
        records: Records = np.zeros(1, dtype=RECORD)
        records["key"] = np.frombuffer(A, dtype="V20")
        records["counts"] = [[self.bytes // 100, self.bytes, 0, 0]]
        records["last_seen"] = int(self.time)
        header = Header(cursor=f"{self.session}:{self.seq}", full=True, time=self.time,
                        name="t", device="veth0", mode="tc", start=self.start, peers=1,
                        capacity=1024, totals={"packets": self.bytes // 100,
                                               "bytes": self.bytes, "overflow": 0})
        return header, records, {}

    def restart(self) -> None:  # a new daemon: new session, counts from zero
        self.session, self.bytes = "s2", 0


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Instance_:
    fake = Instance_()
    monkeypatch.setattr(screen, "request_changes", fake)
    return fake


def session() -> Session:
    return Session(Instance(name="t", statedir=Path("/nonexistent"),
                            piddir=Path("/nonexistent")), timeout_s=1.0,
                   clock=lambda: 1_700_000_000.0)


def rate(s: Session) -> float:
    return s.view(ViewOptions(), 10).lines[0].rates[0]


def test_an_instance_that_goes_away_is_waited_for_and_its_rates_start_over(
        daemon: Instance_) -> None:
    s = session()
    s.first()
    assert s.refresh() and rate(s) == 1000.0
    daemon.down = True
    assert not s.refresh() and not s.refresh()
    view = s.view(ViewOptions(), 10)
    assert view.stale and view.note.startswith("instance not running since ")
    assert view.note.endswith(": waiting")
    daemon.down = False
    daemon.restart()  # back with a new session and smaller counts: a baseline, no spike
    assert s.refresh() and s.answers == 1 and rate(s) == 0.0
    assert not s.view(ViewOptions(), 10).stale
    assert s.refresh() and rate(s) == 1000.0
    assert s.view(ViewOptions(), 10).frame_rate == 10.0  # the header's windows, too


def test_a_hup_starts_every_peer_s_rates_over(daemon: Instance_) -> None:
    """A HUP's new period (another start, counts from zero) is a baseline: no window keeps
    what came before it, and none dips for lack of what came between."""
    s = session()
    s.first()
    assert s.refresh() and rate(s) == 1000.0
    daemon.bytes, daemon.start = 0, 950  # the HUP's reset: same session, a new start
    assert s.refresh() and s.answers == 1 and rate(s) == 0.0
    assert s.refresh() and rate(s) == 1000.0
    assert list(s.view(ViewOptions(), 10).lines[0].rates) == [1000.0, 1000.0, 1000.0]


def test_the_first_request_tries_for_two_seconds_then_gives_up(
        daemon: Instance_, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(screen.time, "monotonic", lambda: now[0])

    def sleep(seconds: float) -> None:
        now[0] += seconds
        daemon.down = now[0] < 0.95 or not up  # binds its socket a second late
    daemon.down, up = True, True
    session().first(sleep=sleep)
    assert daemon.asked == 11  # ten 0.1 s naps
    daemon.down, up, now[0], daemon.asked = True, False, 0.0, 0
    with pytest.raises(NotRunning):
        session().first(sleep=sleep)
    assert now[0] == pytest.approx(screen.FIRST_TRY_S, abs=0.11)


def test_batch_says_once_when_the_instance_goes_and_once_when_it_is_back(
        daemon: Instance_, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screen.time, "sleep", lambda s: None)
    steps = iter([False, False, True, True, False, False, False, False])
    real = daemon.__call__

    def ask(*args: object, **kwargs: object) -> object:
        down = next(steps, False)
        daemon.down = down
        if down and daemon.session == "s1":
            daemon.restart()
        return real(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(screen, "request_changes", ask)
    out, err = io.StringIO(), io.StringIO()
    screen.run_batch(session(), ViewOptions(), 1.0, 3, None, out, err)
    said = err.getvalue().splitlines()
    assert len(said) == 2, said
    assert said[0].startswith("ncebpf top: instance not running since ")
    assert said[1].startswith("ncebpf top: instance 't' answers again at ")
    snapshots = out.getvalue().split("\n\n")[:-1]
    assert len(snapshots) == 3  # one before it went, two from the second answer after
    rows = [snap.splitlines()[-1].split() for snap in snapshots]
    assert [row[:2] for row in rows] == [["10.77.0.2", "1000"]] * 3


def test_batch_at_a_long_interval_prints_its_first_rates_two_seconds_after_the_baseline(
        daemon: Instance_, monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []
    now = [0.0]
    monkeypatch.setattr(screen.time, "monotonic", lambda: now[0])

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds
    monkeypatch.setattr(screen.time, "sleep", sleep)
    s = session()
    s.max_age_s = 0.9 * 3600
    out = io.StringIO()
    screen.run_batch(s, ViewOptions(), 3600.0, 2, None, out, io.StringIO())
    assert naps == [2.0, 3600.0]
    assert daemon.ages == [3240.0, pytest.approx(1.8), pytest.approx(3240.0)]
    assert out.getvalue().count("\n\n") == 2


def test_keys_escape_sequences_are_no_keys_and_esc_keeps_the_filter() -> None:
    assert split_keys("s\x1b[A\x1b[1;5Cb\x1bOPq\x1b") == ["s", "b", "q", "\x1b"]
    keys = _Keyboard(ViewOptions(search="10.77"))
    for key in split_keys("/6.2\x1b[D") + ["\r"]:
        keys.press(key)
    assert keys.options.search == "6.2"  # a new filter, not appended; the arrow ignored
    keys.press("/")
    assert keys.note == "filter: _"
    keys.press("x")
    keys.press("\x1b")
    assert keys.options.search == "6.2" and keys.typing is None
    for key in "/\r":
        keys.press(key)
    assert keys.options.search == ""


def test_sigterm_and_sighup_end_top_through_its_cleanup() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        before = signal.getsignal(signum)
        cleaned = []
        with pytest.raises(Ended) as ended, ending_on_signals():
            try:
                os.kill(os.getpid(), signum)
                time.sleep(5)  # the handler raises in the main thread at once
            finally:
                cleaned.append(signum)
        assert ended.value.signum == signum and cleaned == [signum]
        assert signal.getsignal(signum) == before


def test_a_stale_view_shows_no_rates(daemon: Instance_) -> None:
    from ncebpf.top import render

    s = session()
    s.first()
    s.refresh()
    daemon.down = True
    s.refresh()
    view = s.view(ViewOptions(), 10)
    lines = [t.plain for t in render.header(view)] + [t.plain for t in render.table(view, 80)]
    assert lines[1].startswith("frames/s -  bytes/s 2s - 10s - 40s -")
    assert lines[4].startswith("instance not running since ")
    assert lines[-1].split()[:4] == ["10.77.0.2", "-", "-", "-"]
    assert replace(view, stale=False).lines[0].rates[0] == 1000.0


def test_errors_other_than_not_running_are_not_tried_again(
        daemon: Instance_, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise NcebpfError("ncebpf top reads the counters through ..., which only root")
    monkeypatch.setattr(screen, "request_changes", refuse)
    with pytest.raises(NcebpfError, match="only root"):
        session().first(sleep=lambda s: pytest.fail("retried"))
