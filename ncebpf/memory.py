"""Give the memory of a drain's scratch arrays back to the system when they are freed.

A drain of a million peers makes a few hundred MB of short-lived numpy
arrays and bytes. glibc serves blocks above M_MMAP_THRESHOLD with mmap and
unmaps them on free, but by default raises that threshold to the size of
any such block freed (up to 32 MiB, mallopt(3)), after which same-sized
blocks come from the heap and stay in the daemon's RSS after use (about
70 B per peer at 1 M peers, measured by bench/run.py). Setting the
threshold fixes it and turns the adjustment off.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 256 * 1024


def return_large_blocks() -> bool:
    """Serve blocks of MMAP_THRESHOLD_BYTES and more by mmap from now on; False where the
    C library is not glibc (then nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
