from __future__ import annotations

import numpy as np

from ncebpf.kernel.clock import NS, JiffiesClock, measure_hz, snap_hz


class FakeKernel:
    """jiffies and CLOCK_MONOTONIC of a kernel ticking at hz; each sample advances time."""

    def __init__(self, hz: float, step_ns: int = 3_000, start_ns: int = 10 * NS) -> None:
        self.hz, self.step_ns, self.now_ns = hz, step_ns, start_ns

    def __call__(self) -> tuple[int, int]:
        self.now_ns += self.step_ns
        return 4_294_000_000 + int(self.now_ns * self.hz / NS), self.now_ns


def test_common_hz_values_are_measured_exactly() -> None:
    for hz in (100, 250, 300, 1000):
        assert measure_hz(FakeKernel(hz)) == hz


def test_uncommon_hz_is_kept_as_measured() -> None:
    assert abs(measure_hz(FakeKernel(128)) - 128) < 0.5


def test_snap_only_within_one_percent() -> None:
    assert snap_hz(251.0) == 250
    assert snap_hz(260.0) == 260.0


def test_conversion_is_anchored_at_the_latest_sample() -> None:
    kernel = FakeKernel(250)
    clock = JiffiesClock(kernel)
    clock.resync()
    jiffies_now, mono_now = kernel()
    two_seconds_ago = jiffies_now - 500
    assert abs(clock.to_monotonic_ns(two_seconds_ago) - (mono_now - 2 * NS)) < 2 * NS // 250
    converted = clock.to_monotonic_ns_array(np.array([two_seconds_ago], dtype=np.uint64))
    assert int(converted[0]) == clock.to_monotonic_ns(two_seconds_ago)
