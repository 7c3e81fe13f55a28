"""Headless Chromium (Debian's `chromium`) for the HTML report: the DOM after scripts, screenshots.

Run as root Chromium refuses to start without --no-sandbox; the profile
lives in a directory the caller owns (a test's tmp_path), so nothing is left
in the home directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = "chromium"
TIMEOUT = 120  # seconds: a cold start on a loaded 2-core VM takes a few


def chromium_path() -> str | None:
    return shutil.which(CHROMIUM)


def _run(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run",
               "--hide-scrollbars", f"--user-data-dir={profile}"]
    if os.geteuid() == 0:
        command.append("--no-sandbox")
    return subprocess.run([*command, *arguments], capture_output=True, text=True,
                          timeout=TIMEOUT, check=True)


def dump_dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The page's DOM once loaded (its inline script has run), as HTML text."""
    return _run(profile, "--dump-dom", page.as_uri() + fragment).stdout


def screenshot(page: Path, profile: Path, png: Path, width: int, height: int) -> None:
    """A PNG of the page in a window of width x height CSS pixels."""
    _run(profile, f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri())


def png_size(png: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if it is not a PNG."""
    head = png.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{png} is not a PNG")
    return int.from_bytes(head[16:20]), int.from_bytes(head[20:24])
