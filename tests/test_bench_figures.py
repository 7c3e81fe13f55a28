"""Benchmark figures never show a negative cost or an infinite ratio: noise is named."""

from __future__ import annotations

import pytest

from bench.figures import (
    Figure,
    costs_above,
    show_cost_ratio,
    show_difference,
    show_ratio,
    stands_out,
)


def test_a_figure_is_its_median_and_the_range_of_its_rounds() -> None:
    assert Figure.of([53, 49, 58, 50, 70]).show("ns") == "53 ns (49–70)"
    assert Figure.of([0.84]).show("s", digits=2) == "0.84 s"
    assert Figure.of([2.4e-7, 2.6e-7, 2.5e-7]).show("ns", scale=1e9) == "250 ns (240–260)"


def test_a_difference_smaller_than_the_noise_is_not_a_number() -> None:
    # A noisy baseline (300–420) above a figure (350–380): the old output said "-15 ns".
    figure, baseline = [360, 350, 380], [300, 375, 420]
    assert not stands_out(figure, baseline)
    assert show_difference(figure, baseline, "ns") == "below the noise of this machine: ±60 ns"


def test_a_difference_that_changes_sign_between_rounds_is_noise() -> None:
    assert not stands_out([100, 100, 100], [90, 110, 95])


def test_a_difference_that_stands_out_is_shown_without_a_sign() -> None:
    assert show_difference([70, 72, 71], [50, 51, 52], "ns") == "20 ns (19–21) more"
    assert show_difference([50, 51, 52], [70, 72, 71], "ns") == "20 ns (19–21) less"


def test_resolution_sets_the_least_noise() -> None:
    assert show_difference([6, 6, 6], [6, 6, 6], "ns", resolution=1) == \
        "below the noise of this machine: ±1 ns"
    assert show_difference([8, 8, 8], [6, 6, 6], "ns", resolution=1) == "2 ns more"


def test_ratios_are_of_costs_only() -> None:
    assert show_ratio([29, 30, 28], [28, 28, 28]) == "1.04× (1.00–1.07)"
    with pytest.raises(ValueError):
        show_ratio([29, 30], [0, 28])


def test_a_ratio_of_costs_is_taken_above_the_baseline_of_each_round() -> None:
    baselines = [790.0, 810.0, 800.0]
    per_packet = {"tcpdump": [1790.0, 1810.0, 1800.0], "ncebpf": [890.0, 910.0, 900.0]}
    assert show_cost_ratio("tcpdump", "ncebpf", per_packet, baselines) == "10.00×"


def test_no_ratio_when_a_cost_is_within_the_noise() -> None:
    baselines = [700.0, 900.0, 800.0]
    per_packet = {"tcpdump": [1700.0, 1900.0, 1800.0], "ncebpf": [710.0, 880.0, 805.0]}
    assert show_cost_ratio("tcpdump", "ncebpf", per_packet, baselines) == \
        "no ratio: the cost of 'ncebpf' is below the noise of this machine"
    assert costs_above(per_packet["ncebpf"], baselines) is None


def test_a_saving_is_not_a_cost() -> None:
    assert costs_above([500.0, 600.0, 550.0], [700.0, 800.0, 750.0]) is None


def test_a_ratio_is_held_against_its_target_round_by_round() -> None:
    baselines = [800.0, 800.0, 800.0]
    per_packet = {"pmacctd": [2800.0, 2000.0, 2600.0], "ncebpf": [900.0, 900.0, 900.0]}
    assert show_cost_ratio("pmacctd", "ncebpf", per_packet, baselines, target=15) == \
        "18.00× (12.00–20.00); target ≥ 15×: met by the median, not in every round"
    assert show_cost_ratio("pmacctd", "ncebpf", per_packet, baselines, target=10).endswith(
        "target ≥ 10×: met in every round")
    assert show_cost_ratio("pmacctd", "ncebpf", per_packet, baselines, target=20).endswith(
        "target ≥ 20×: not met")
    per_packet["ncebpf"] = [805.0, 790.0, 800.0]
    assert show_cost_ratio("pmacctd", "ncebpf", per_packet, baselines, target=20).endswith(
        "below the noise of this machine; target ≥ 20×: undecided")
