"""`ncebpf top` against an instance counting known traffic: on an 80x24 terminal (Debian's
`tmux`, read back with `capture-pane`) and with --batch, the busiest peer is on the first
row at the rate it was sent, within 10 %."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, TIME_SCALE, DaemonProcess, NetnsPair, run

pytestmark = pytest.mark.privileged

BUSY, QUIET = "10.77.5.1", "10.77.5.2"
RATE = 4000  # frames/s: 8 of every 10 from BUSY, paced in bursts of 256 (64 ms: 3 % of 2 s)
SECONDS = 11


def si_value(text: str) -> float:
    """A figure as top shows it: 999, 1.02k, 12.3M, or exact digits."""
    match = re.fullmatch(r"([0-9.]+)([kMGTPE]?)", text)
    assert match, f"not a figure: {text!r}"
    return float(match[1]) * 1000 ** " kMGTPE".index(match[2] or " ")


def first_row(screen: str) -> tuple[str, dict[str, float]]:
    """(label, {heading: value}) of the table's first row."""
    lines = screen.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] in (["peer"], ["prefix"]))
    headings = lines[at].split()
    cells = lines[at + 1].split()
    values = {h: si_value(c) for h, c in zip(headings[1:4], cells[1:4], strict=True)}
    return cells[0], values


@contextlib.contextmanager
def tmux(workdir: Path, command: list[str]) -> Iterator[list[str]]:
    """command in a detached 80x24 tmux session on a private server; yields tmux's argv
    prefix for that server. The server is killed on the way out."""
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is missing: make test installs it (scripts/install-system-deps --test)")
    server = [binary, "-S", str(workdir / f"tmux-{secrets.token_hex(3)}")]
    env = [f"-e{name}={os.environ[name]}" for name in ("PYTHONPATH", "PATH")
           if name in os.environ]
    run(*server, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24", *env,
        "-e", "TERM=xterm-256color", *command)
    try:
        yield server
    finally:
        run(*server, "kill-server", check=False)


def test_top_shows_the_busiest_peer_at_the_rate_sent(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--filter", "udp")
    busy = ip_frame(BUSY, pair.local_v4, "udp", 500)
    quiet = ip_frame(QUIET, pair.local_v4, "udp", 100)
    cycle = [busy] * 8 + [quiet] * 2
    sent: dict[str, float] = {}

    def send() -> None:
        started = time.monotonic()
        count = pair.inject_ingress(cycle, workdir, repeat=RATE * SECONDS // len(cycle),
                                    rate=RATE)
        sent["busy_rate"] = count * 0.8 * len(busy) / (time.monotonic() - started)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        time.sleep(1.5)  # the traffic runs before top's first answer, its baseline
        top = [*NCEBPF, "top", "--interval", "1", *daemon.args]
        batch = subprocess.Popen([*top, "--batch", "--iterations", "6"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with tmux(workdir, top) as server:
            time.sleep(7)
            screen = run(*server, "capture-pane", "-p", "-t", "0").stdout
            run(*server, "send-keys", "-t", "0", "q")
            deadline = time.monotonic() + 5 * TIME_SCALE
            while time.monotonic() < deadline and \
                    run(*server, "has-session", check=False).returncode == 0:
                time.sleep(0.1)
            quit_by_key = run(*server, "has-session", check=False).returncode != 0
        out, err = batch.communicate(timeout=30 * TIME_SCALE)
        sender.join()
    finally:
        assert daemon.stop() == 0

    expected = sent["busy_rate"]
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), screen
    assert pair.local_if in lines[0] and "filter: udp" in lines[0], screen
    label, rates = first_row(screen)
    assert label == BUSY, screen
    for window, rate in rates.items():
        assert abs(rate - expected) <= 0.1 * expected, (window, rate, expected, screen)
    assert "q quit" in screen
    assert quit_by_key, "q did not end top"

    assert batch.returncode == 0, err
    snapshots = [s for s in out.split("\n\n") if s.strip()]
    assert len(snapshots) == 6, out
    label, rates = first_row(snapshots[-1])
    assert label == BUSY, snapshots[-1]
    for window, rate in rates.items():
        assert abs(rate - expected) <= 0.1 * expected, (window, rate, expected, out)
    # Every snapshot has the same columns, names last ("-": none), no field with a space.
    for snapshot in snapshots:
        table = snapshot.splitlines()[5:]
        assert table[0].split() == ["peer", "2s", "10s", "40s", "total", "pkt/s", "in", "out",
                                    "peers", "idle", "since", "names"], snapshot
        assert all(len(row.split()) == 12 and row.split()[-1] == "-" for row in table[1:])
    # The quiet peer follows, at a quarter of the frames and a fifth of their size.
    second = snapshots[-1].splitlines()[-1].split()
    assert second[0] == QUIET and 0 < si_value(second[2]) < expected / 10
