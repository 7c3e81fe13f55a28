"""The terminal loop of `ncebpf top`: ask, absorb, draw, read keys; or --batch snapshots.

Everything it shows is made by ncebpf.top.view and ncebpf.top.render; this
module only times the requests, reads single key presses (the terminal in
cbreak mode, restored on the way out however it ends: q, Ctrl-C, and SIGTERM
or SIGHUP, which raise Ended while the screen runs) and hands renderables to
rich's Live, which owns the screen: no escape sequence is written here. An
instance that stops answering is asked again every interval (Session.refresh).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import TextIO

from rich.console import Console
from rich.live import Live

from ncebpf.config import Instance
from ncebpf.errors import NcebpfError, NotRunning
from ncebpf.top import render
from ncebpf.top.client import request_changes
from ncebpf.top.rates import PeerRates, TotalRates
from ncebpf.top.view import BYS, SORTS, Labels, View, ViewOptions, build, counter_values
from ncebpf.top.wire import Header

ESCAPE, ENTER, BACKSPACE = "\x1b", ("\r", "\n"), ("\x7f", "\b")
FIRST_RATES_S = 2.0  # --batch's first snapshot: this long after its baseline at most
FIRST_TRY_S = 2.0  # a top started as the daemon starts may find its socket not yet bound
END_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # a kill, a closed ssh session


class Ended(Exception):
    """A SIGTERM or SIGHUP ended top: raised in the main thread, so that the terminal is
    given back as on q; the exit status is 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def ending_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Ended while inside; the old handlers are back after."""
    def end(signum: int, frame: FrameType | None) -> None:
        raise Ended(signum)
    saved = {signum: signal.signal(signum, end) for signum in END_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@dataclass
class Session:
    """One `top`'s view of one instance: what it has absorbed, and its cursor."""

    instance: Instance
    timeout_s: float
    max_age_s: float | None = None  # how old the counts may be (0.9 of the refresh interval)
    rates: PeerRates = field(default_factory=PeerRates)
    totals: TotalRates = field(default_factory=TotalRates)
    cursor: str = ""
    header: Header | None = None
    answers: int = 0  # since the rates last started over
    gone_since: float | None = None  # epoch s the instance stopped answering
    gone_reason: str = ""
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.labels = Labels(self.rates)

    def first(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """The first answer; nothing listening is tried again for FIRST_TRY_S (a daemon
        that says it runs binds its socket a moment later). Raises NcebpfError."""
        deadline = time.monotonic() + FIRST_TRY_S
        while True:
            try:
                self.poll()
                return
            except NotRunning:
                if time.monotonic() >= deadline:
                    raise
                sleep(0.1)

    def poll(self, max_age_s: float | None = None) -> None:
        """Ask for what moved since the cursor and take it in; max_age_s: how old the counts
        may be this time (None: self.max_age_s). An answer of another session than the
        cursor's (the instance restarted, or slept after a long pause), or of a new period
        (a HUP: another start), starts the rates over: it is the baseline. Raises
        NcebpfError."""
        header, records, names = request_changes(self.instance, self.cursor, self.timeout_s,
                                                 max_age_s or self.max_age_s)
        restarted = self.header is not None and header.start != self.header.start
        if restarted or self.cursor and \
                header.cursor.partition(":")[0] != self.cursor.partition(":")[0]:
            # A new session (the instance restarted, or slept), or a HUP's new period:
            # every count starts over, and the windows with them.
            self.rates.restart()
            self.totals.restart()
            self.answers = 0
        self.rates.absorb(header.time, header.full, records["key"], records["counts"],
                          records["born"].astype(bool), records["first_seen"],
                          records["last_seen"], names)
        self.totals.add(header.time, counter_values(header), header.start)
        self.cursor, self.header = header.cursor, header
        self.answers += 1

    def refresh(self, max_age_s: float | None = None) -> bool:
        """poll(), keeping track of an instance that went away: False while it does not
        answer (gone_since says since when, gone_reason why)."""
        try:
            self.poll(max_age_s)
        except NcebpfError as exc:
            if self.gone_since is None:
                self.gone_since = self.clock()
            self.gone_reason = str(exc)
            return False
        self.gone_since = None
        return True

    @property
    def waiting(self) -> str:
        """The status while the instance does not answer ("" while it does)."""
        if self.gone_since is None:
            return ""
        since = time.strftime("%H:%M:%S", time.localtime(self.gone_since))
        return f"instance not running since {since}: waiting"

    def view(self, options: ViewOptions, limit: int, note: str = "") -> View:
        """The view of what was absorbed; stale (rates shown as `-`) while the instance
        does not answer."""
        assert self.header is not None
        if self.waiting:
            note = self.waiting
        elif self.answers < 2 and not note:
            note = "rates from the next drain on"
        return replace(build(self.rates, self.totals, self.header, self.labels, options,
                             limit, self.clock(), note), stale=bool(self.waiting))


def run_batch(session: Session, options: ViewOptions, interval_s: float,
              iterations: int | None, lines: int | None, out: TextIO,
              err: TextIO = sys.stderr) -> None:
    """Print a snapshot every interval_s (the first once there are rates: at most
    FIRST_RATES_S after the baseline, asking for counts that fresh), iterations
    times (None: until interrupted). lines: rows per snapshot (None: all). An instance
    that goes away is told on err once, asked again every interval, and told back once
    (its rates start over); no snapshot meanwhile."""
    session.first()
    name = session.instance.name
    shown = 0
    shown_time = 0.0  # the drain time of the last snapshot printed
    deadline = time.monotonic()
    while iterations is None or shown < iterations:
        # The first rates come FIRST_RATES_S after a baseline, whatever the interval.
        wait = min(interval_s, FIRST_RATES_S) if session.answers == 1 else interval_s
        deadline += wait
        time.sleep(max(0.0, deadline - time.monotonic()))
        was_gone = session.gone_since is not None
        if not session.refresh(0.9 * wait):
            if not was_gone:
                err.write(f"ncebpf top: {session.waiting}: {session.gone_reason}\n")
                err.flush()
            continue
        if was_gone:
            err.write(f"ncebpf top: instance {name!r} answers again at "
                      f"{time.strftime('%H:%M:%S')}: rates start over\n")
            err.flush()
        if session.answers < 2:
            continue
        if not _newer_than(session, shown_time):
            continue  # gone meanwhile: told by the next refresh
        assert session.header is not None
        shown_time = session.header.time
        out.write(render.batch_text(session.view(options, lines or 1 << 62)))
        out.flush()
        shown += 1


def _newer_than(session: Session, shown: float, tries: int = 10) -> bool:
    """Ask again, briefly, while the session's counts are those of the snapshot shown last
    (an answer that came within the daemon's FRESH_S of its last drain): a snapshot is
    never printed twice. Gives up after tries (drains held by a HUP's dump); False when
    the instance stopped answering meanwhile."""
    for _ in range(tries):
        if session.header is None or session.header.time != shown:
            return True
        time.sleep(0.1)
        if not session.refresh():
            return False
    return True


@contextlib.contextmanager
def _keys() -> Iterator[int]:
    """Standard input in cbreak mode (single key presses, no echo), restored at the end."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def split_keys(chunk: str) -> list[str]:
    """The key presses in what one read gave: an escape sequence (an arrow, a function
    key: ESC [ ... final, ESC O x) or an Alt+key (ESC x) is no key and is left out; a lone
    ESC at the end of the read is the Esc key."""
    keys: list[str] = []
    at = 0
    while at < len(chunk):
        key = chunk[at]
        at += 1
        if key != ESCAPE:
            keys.append(key)
        elif at == len(chunk):
            keys.append(ESCAPE)
        elif chunk[at] == "[":  # CSI: parameters and intermediates, then a final byte
            at += 1
            while at < len(chunk) and not "\x40" <= chunk[at] <= "\x7e":
                at += 1
            at += 1
        elif chunk[at] == "O":  # SS3: one more
            at += 2
        else:
            at += 1
    return keys


@dataclass
class _Keyboard:
    """What the keys did so far; press() takes one key."""

    options: ViewOptions
    typing: str | None = None  # the filter being typed after '/'
    quit: bool = False

    def press(self, key: str) -> None:
        options = self.options
        if self.typing is not None:
            if key in ENTER:
                self.options, self.typing = replace(options, search=self.typing), None
            elif key == ESCAPE:  # the filter stays as it was
                self.typing = None
            elif key in BACKSPACE:
                self.typing = self.typing[:-1]
            elif key.isprintable():
                self.typing += key
            return
        if key in ("q", "Q"):
            self.quit = True
        elif key == "s":
            self.options = replace(options, sort=SORTS[(SORTS.index(options.sort) + 1)
                                                       % len(SORTS)])
        elif key == "b":
            self.options = replace(options, by=BYS[(BYS.index(options.by) + 1) % len(BYS)])
        elif key in ("p", " "):
            self.options = replace(options, paused=not options.paused)
        elif key == "/":  # a new filter; Enter on nothing clears it
            self.typing = ""

    @property
    def note(self) -> str:
        return f"filter: {self.typing}_" if self.typing is not None else ""


def run_screen(session: Session, options: ViewOptions, interval_s: float,
               iterations: int | None) -> None:
    """The full-screen view until q (or iterations refreshes)."""
    console = Console(highlight=False)
    keyboard = _Keyboard(options)
    session.first()
    refreshes = 0
    with ending_on_signals(), _keys() as fd, Live(
            console=console, screen=True, auto_refresh=False, redirect_stdout=False,
            redirect_stderr=False) as live:
        next_poll = time.monotonic() + interval_s
        while not keyboard.quit and (iterations is None or refreshes < iterations):
            width, height = console.size
            # Paused, nothing is asked: the figures stay, and the keys regroup and re-sort them.
            shown = session.view(keyboard.options, render.table_lines(height))
            if keyboard.note:
                note = f"{shown.note}  {keyboard.note}" if shown.stale else keyboard.note
                shown = replace(shown, note=note)
            live.update(render.screen(shown, width, height), refresh=True)
            wait = max(0.0, next_poll - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                for key in split_keys(os.read(fd, 64).decode(errors="replace")):
                    keyboard.press(key)
                continue
            next_poll = time.monotonic() + interval_s
            if keyboard.options.paused:
                continue
            session.refresh()  # the instance gone: the figures go stale, and it is asked again
            refreshes += 1
