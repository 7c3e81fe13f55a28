"""Figures that hold: a median with its spread, and differences that admit the noise.

A benchmark repeats each measurement over rounds (interleaved, because this
machine's speed drifts) and prints the median with the min–max of the rounds.
A difference between two measured figures is only printed as a number when it
stands out of the noise: its per-round values all have the same sign and its
median is larger than the half-spread of either figure. Otherwise it is printed
as "below the noise of this machine: ±N" — never as a negative cost or an
infinite ratio. Pure; no I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One quantity measured over rounds: the median and the lowest and highest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, rounds: Sequence[float]) -> Figure:
        if not rounds:
            raise ValueError("a figure needs at least one round")
        return cls(statistics.median(rounds), min(rounds), max(rounds))

    @property
    def noise(self) -> float:
        """Half the spread of the rounds: how far one round may sit from another's middle."""
        return (self.high - self.low) / 2

    def show(self, unit: str, scale: float = 1.0, digits: int = 0) -> str:
        """'53 ns (49–58)': median, then the range over rounds (omitted for one round)."""
        median, low, high = (v * scale for v in (self.median, self.low, self.high))
        if low == high:
            return f"{median:.{digits}f} {unit}"
        return f"{median:.{digits}f} {unit} ({low:.{digits}f}–{high:.{digits}f})"


def noise_of(*rounds: Sequence[float], resolution: float = 0.0) -> float:
    """The larger half-spread of the figures, and never less than what the clock resolves."""
    return max(resolution, *(Figure.of(r).noise for r in rounds))


def stands_out(minuend: Sequence[float], subtrahend: Sequence[float],
               resolution: float = 0.0) -> bool:
    """Whether minuend − subtrahend, round by round, is a difference and not noise."""
    diffs = [a - b for a, b in zip(minuend, subtrahend, strict=True)]
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    return same_sign and abs(statistics.median(diffs)) > noise_of(
        minuend, subtrahend, resolution=resolution)


def show_difference(minuend: Sequence[float], subtrahend: Sequence[float], unit: str,
                    more: str = "more", less: str = "less", scale: float = 1.0,
                    digits: int = 0, resolution: float = 0.0) -> str:
    """minuend − subtrahend, paired by round: '12 ns more (9–15)', '5 ns less (3–8)', or
    'below the noise of this machine: ±7 ns'. resolution: the smallest step the
    measurement can show (BPF_PROG_TEST_RUN reports whole nanoseconds)."""
    if not stands_out(minuend, subtrahend, resolution):
        noise = noise_of(minuend, subtrahend, resolution=resolution) * scale
        return f"below the noise of this machine: ±{noise:.{digits}f} {unit}"
    diffs = [a - b for a, b in zip(minuend, subtrahend, strict=True)]
    word = more if statistics.median(diffs) > 0 else less
    return f"{Figure.of([abs(d) for d in diffs]).show(unit, scale, digits)} {word}"


def show_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> str:
    """numerator / denominator, paired by round: '1.04× (1.01–1.07)'. Both must be costs
    that were measured, not differences that may be noise."""
    if min(denominator) <= 0 or min(numerator) <= 0:
        raise ValueError("a ratio of costs needs positive costs")
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return Figure.of(ratios).show("×", digits=2).replace(" ×", "×")


def costs_above(rounds: Sequence[float], baselines: Sequence[float],
                resolution: float = 0.0) -> list[float] | None:
    """rounds − baselines, paired by round, when that is a cost that stands out of the noise
    (stands_out, and above the baseline); None when it is noise or a saving."""
    if not stands_out(rounds, baselines, resolution) or \
            statistics.median(rounds) <= statistics.median(baselines):
        return None
    return [a - b for a, b in zip(rounds, baselines, strict=True)]


def show_cost_ratio(numerator: str, denominator: str, per_packet: dict[str, list[float]],
                    baselines: Sequence[float], resolution: float = 0.0,
                    target: float | None = None) -> str:
    """How many times the cost of `numerator` is the cost of `denominator`, each its rounds
    minus the same round's run with no observer: '7.10× (5.02–9.40)', or 'no ratio: ...'
    naming the cost that is below the noise of this machine. target: the least ratio wanted,
    said to be met in every round, by the median only, not met, or undecided."""
    above = costs_above(per_packet[numerator], baselines, resolution)
    below = costs_above(per_packet[denominator], baselines, resolution)
    if below is None or above is None:
        quiet = denominator if below is None else numerator
        verdict = f"no ratio: the cost of {quiet!r} is below the noise of this machine"
        return verdict if target is None else f"{verdict}; target ≥ {target:g}×: undecided"
    if target is None:
        return show_ratio(above, below)
    ratios = [a / b for a, b in zip(above, below, strict=True)]
    if min(ratios) >= target:
        met = "met in every round"
    elif statistics.median(ratios) >= target:
        met = "met by the median, not in every round"
    else:
        met = "not met"
    return f"{show_ratio(above, below)}; target ≥ {target:g}×: {met}"


def print_machine_costs(baselines: Sequence[float], per_packet: dict[str, list[float]],
                        notes: dict[str, str], resolution: float, width: int = 40) -> None:
    """Machine CPU per packet (seconds per packet, one figure per round) of each observer
    against the run with no observer of the same round: the rounds, and the cost or
    "below the noise". resolution: one clock tick spread over a run's frames."""
    print(f"  {'no observer (baseline)':<{width}} "
          f"{Figure.of(baselines).show('ns/packet', scale=1e9):>22}; median (min–max) of "
          f"{len(baselines)} interleaved rounds")
    for label, rounds in per_packet.items():
        cost = show_difference(rounds, baselines, "ns/packet", more="above the baseline",
                               less="below the baseline", scale=1e9, resolution=resolution)
        print(f"  {label:<{width}} {Figure.of(rounds).show('ns/packet', scale=1e9):>22}; "
              f"cost: {cost}; {notes[label]}")
