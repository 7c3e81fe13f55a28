"""The terminal loop of `ncebpf top`: ask, absorb, draw, read keys; or --batch snapshots.

Everything it shows is made by ncebpf.top.view and ncebpf.top.render; this
module only times the requests, reads single key presses (the terminal in
cbreak mode, restored on the way out however it ends) and hands renderables
to rich's Live, which owns the screen: no escape sequence is written here.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TextIO

from rich.console import Console
from rich.live import Live

from ncebpf.config import Instance
from ncebpf.errors import NcebpfError
from ncebpf.top import render
from ncebpf.top.client import request_changes
from ncebpf.top.rates import PeerRates, TotalRates
from ncebpf.top.view import BYS, SORTS, Labels, View, ViewOptions, build, counter_values
from ncebpf.top.wire import Header

ESCAPE, ENTER, BACKSPACE = "\x1b", ("\r", "\n"), ("\x7f", "\b")


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
    answers: int = 0

    def __post_init__(self) -> None:
        self.labels = Labels(self.rates)

    def poll(self) -> None:
        """Ask for what moved since the cursor and take it in. Raises NcebpfError."""
        header, records, names = request_changes(self.instance, self.cursor, self.timeout_s,
                                                 self.max_age_s)
        self.rates.absorb(header.time, header.full, records["key"], records["counts"],
                          records["born"].astype(bool), records["first_seen"],
                          records["last_seen"], names)
        self.totals.add(header.time, counter_values(header))
        self.cursor, self.header = header.cursor, header
        self.answers += 1

    def view(self, options: ViewOptions, limit: int, note: str = "") -> View:
        assert self.header is not None
        if self.answers < 2 and not note:
            note = "rates from the next drain on"
        return build(self.rates, self.totals, self.header, self.labels, options, limit,
                     time.time(), note)


def run_batch(session: Session, options: ViewOptions, interval_s: float,
              iterations: int | None, lines: int | None, out: TextIO) -> None:
    """Print a snapshot every interval_s (the first once there are rates), iterations
    times (None: until interrupted). lines: rows per snapshot (None: all)."""
    session.poll()
    shown = 0
    deadline = time.monotonic()
    while iterations is None or shown < iterations:
        deadline += interval_s
        time.sleep(max(0.0, deadline - time.monotonic()))
        session.poll()
        out.write(render.batch_text(session.view(options, lines or 1 << 62)))
        out.flush()
        shown += 1


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
            elif key == ESCAPE:
                self.options, self.typing = replace(options, search=""), None
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
        elif key == "/":
            self.typing = options.search

    @property
    def note(self) -> str:
        return f"filter: {self.typing}_" if self.typing is not None else ""


def run_screen(session: Session, options: ViewOptions, interval_s: float,
               iterations: int | None) -> None:
    """The full-screen view until q (or iterations refreshes)."""
    console = Console(highlight=False)
    keyboard = _Keyboard(options)
    session.poll()
    refreshes = 0
    with _keys() as fd, Live(console=console, screen=True, auto_refresh=False,
                             redirect_stdout=False, redirect_stderr=False) as live:
        next_poll = time.monotonic() + interval_s
        error = ""
        while not keyboard.quit and (iterations is None or refreshes < iterations):
            width, height = console.size
            # Paused, nothing is asked: the figures stay, and the keys regroup and re-sort them.
            shown = session.view(keyboard.options, render.table_lines(height), error)
            if keyboard.note:
                shown = replace(shown, note=keyboard.note)
            live.update(render.screen(shown, width, height), refresh=True)
            wait = max(0.0, next_poll - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                for key in os.read(fd, 64).decode(errors="replace"):
                    keyboard.press(key)
                continue
            next_poll = time.monotonic() + interval_s
            if keyboard.options.paused:
                continue
            try:
                session.poll()
                error = ""
            except NcebpfError as exc:  # the instance stopped: say so, keep trying
                error = str(exc)
            refreshes += 1
