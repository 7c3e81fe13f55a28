"""Convert the kernel's jiffies timestamps to CLOCK_MONOTONIC nanoseconds.

The programs stamp peers with bpf_jiffies64(), the cheapest clock an XDP
program can read. Jiffies advance HZ times a second, and HZ is a kernel
build option no interface reports, so we measure it: sample (jiffies,
monotonic ns) pairs at two jiffy edges a few ticks apart. Each conversion
is anchored at the latest sample, so old timestamps carry the error of the
HZ estimate only over their age, and a common HZ within 1% is taken exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

NS = 1_000_000_000
COMMON_HZ = (100, 250, 300, 1000)

Sampler = Callable[[], tuple[int, int]]  # -> (jiffies, CLOCK_MONOTONIC ns) at one instant


def snap_hz(measured: float) -> float:
    for hz in COMMON_HZ:
        if abs(measured - hz) <= hz * 0.01:
            return float(hz)
    return measured


def _next_edge(sample: Sampler, after: int, deadline: float) -> tuple[int, int]:
    while True:
        jiffies, mono_ns = sample()
        if jiffies > after or time.monotonic() > deadline:
            return jiffies, mono_ns


def measure_hz(sample: Sampler, ticks: int = 4, budget_s: float = 0.5) -> float:
    deadline = time.monotonic() + budget_s
    start_j, _ = sample()
    edge_j, edge_ns = _next_edge(sample, start_j, deadline)
    end_j, end_ns = _next_edge(sample, edge_j + ticks - 1, deadline)
    if end_ns <= edge_ns or end_j <= edge_j:
        return float(COMMON_HZ[1])  # the kernel clock did not tick within the budget
    return snap_hz((end_j - edge_j) * NS / (end_ns - edge_ns))


class JiffiesClock:
    def __init__(self, sample: Sampler) -> None:
        self._sample = sample
        self.hz = measure_hz(sample)
        self._anchor = sample()

    def resync(self) -> None:
        self._anchor = self._sample()

    @property
    def anchor_jiffies(self) -> int:
        return self._anchor[0]

    def to_monotonic_ns(self, jiffies: int) -> int:
        anchor_j, anchor_ns = self._anchor
        return anchor_ns + int((jiffies - anchor_j) * NS / self.hz)

    def to_monotonic_ns_array(self, jiffies: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        anchor_j, anchor_ns = self._anchor
        ticks = jiffies.astype(np.int64) - anchor_j
        return anchor_ns + (ticks * (NS / self.hz)).astype(np.int64)
