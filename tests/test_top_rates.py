"""The 2/10/40-second windows of `ncebpf top` (ncebpf.top.rates): pure, no root."""

from __future__ import annotations

import numpy as np
import pytest

from ncebpf.accounting import peer_key
from ncebpf.peerindex import key_array
from ncebpf.top.rates import PeerRates, TotalRates

A, B = peer_key("10.77.0.2"), peer_key("fd77::2")


def answer(rates: PeerRates, time: float, peers: dict[bytes, tuple[int, int, int, int]],
           born: set[bytes] = frozenset(), full: bool = False,  # type: ignore[assignment]
           names: dict[int, list[str]] | None = None) -> None:
    keys = list(peers)
    rates.absorb(time, full, key_array(b"".join(keys)),
                 np.array([peers[k] for k in keys], dtype=np.uint64).reshape(-1, 4),
                 np.array([k in born for k in keys], dtype=np.bool_),
                 np.full(len(keys), int(time), dtype=np.uint32),
                 np.full(len(keys), int(time), dtype=np.uint32), names or {})


def bytes_per_second(rates: PeerRates, key: bytes) -> list[float]:
    """Both directions' bytes/s of key over each window."""
    row = rates.index.row(key)
    per_second = rates.rates()[:, row, :]
    return [float(per_second[w, 1] + per_second[w, 3]) for w in range(3)]


def test_the_first_answer_is_the_baseline_and_rates_follow_from_the_second() -> None:
    rates = PeerRates()
    answer(rates, 100.0, {A: (10, 5000, 0, 0)})
    assert rates.spans() == (0.0, 0.0, 0.0)
    assert bytes_per_second(rates, A) == [0.0, 0.0, 0.0]
    answer(rates, 101.0, {A: (12, 6000, 3, 300)})
    assert rates.spans() == (1.0, 1.0, 1.0)  # the windows cover what there is
    assert bytes_per_second(rates, A) == [1300.0, 1300.0, 1300.0]
    per_second = rates.rates()[:, rates.index.row(A), :]
    assert per_second[0].tolist() == [2.0, 1000.0, 3.0, 300.0]  # in and out apart


def test_each_window_covers_its_own_answers_whatever_their_spacing() -> None:
    rates = PeerRates()
    counts = 0
    answer(rates, 0.0, {A: (0, 0, 0, 0)})
    # 1000 B/s for 16 s, answers 1.25 s and 0.75 s apart in turn, then silence for 5 s.
    t = 0.0
    for step in [1.25, 0.75] * 8:
        t += step
        counts += int(1000 * step)
        answer(rates, t, {A: (1, counts, 0, 0)})
    assert t == 16.0
    assert bytes_per_second(rates, A) == pytest.approx([1000.0] * 3)
    assert rates.spans() == (2.0, 10.0, 16.0)
    for step in [1.25, 0.75, 1.25, 0.75, 1.0]:
        t += step
        answer(rates, t, {})  # the peer did not move: not in the answer
    assert t == 21.0
    two, ten, forty = bytes_per_second(rates, A)
    assert two == 0.0
    # The 10 s window holds the answers after t = 11, the first of which covers 10-11.25:
    # 11 s, of which 10-16 were busy. Whole drains, divided by the time they cover.
    assert ten == pytest.approx(6000 / 11)
    assert forty == pytest.approx(16000 / 21)  # 16 s busy of the 21 there are


def test_a_peer_listed_since_the_cursor_counts_whole_and_a_known_one_by_its_growth() -> None:
    rates = PeerRates()
    answer(rates, 10.0, {A: (1, 100, 0, 0)})
    answer(rates, 11.0, {A: (2, 300, 0, 0), B: (4, 4000, 0, 0)}, born={B})
    assert bytes_per_second(rates, A)[0] == 200.0
    assert bytes_per_second(rates, B)[0] == 4000.0
    # A peer the top had never seen, not born since its cursor (a full answer after the
    # daemon restarted, say): its counts are a baseline, not a burst.
    c = peer_key("10.77.0.3")
    answer(rates, 12.0, {c: (9, 9000, 0, 0)}, full=True)
    assert bytes_per_second(rates, c) == [0.0, 0.0, 0.0]


def test_a_full_answer_forgets_the_peers_it_lacks_and_smaller_counts_start_over() -> None:
    rates = PeerRates(windows=(2.0, 10.0, 40.0))
    answer(rates, 0.0, {A: (1, 100, 0, 0), B: (1, 100, 0, 0)}, names={1: ["b.example"]})
    assert rates.names[rates.index.row(B)] == ["b.example"]
    answer(rates, 1.0, {A: (1, 50, 0, 0)}, full=True)  # B left; A was reset (HUP)
    listed = rates.listed_rows().tolist()
    assert listed == [rates.index.row(A)]
    assert bytes_per_second(rates, A)[0] == 50.0  # counted anew since the reset


def test_total_rates_give_per_second_and_growth_over_each_window() -> None:
    totals = TotalRates()
    for t in range(0, 13):
        totals.add(float(t), np.array([100.0 * t, 7.0 * (t >= 11)]))
    per_second, growth = totals.over(10.0)
    assert per_second.tolist() == pytest.approx([100.0, 0.7])
    assert growth.tolist() == [1000.0, 7.0]
    per_second, _ = totals.over(40.0)  # no 40 s yet: from the oldest sample
    assert per_second[0] == pytest.approx(100.0)
    assert TotalRates().over(2.0)[0].tolist() == []


def test_total_rates_start_over_after_a_reset_never_going_negative() -> None:
    totals = TotalRates()
    for t in range(0, 5):  # 1000 frames/s since start 100
        totals.add(float(t), np.array([1000.0 * (t + 50)]), start=100)
    assert totals.over(2.0)[0].tolist() == [1000.0]
    totals.add(5.0, np.array([300.0]), start=105)  # a HUP: counted anew from 105
    assert totals.over(2.0)[0].tolist() == [0.0]  # one sample: no rate yet
    totals.add(6.0, np.array([500.0]), start=105)
    assert totals.over(10.0)[0].tolist() == [200.0]
    totals.add(7.0, np.array([100.0]), start=105)  # a total went down (a restart)
    totals.add(8.0, np.array([250.0]), start=105)
    per_second, growth = totals.over(40.0)
    assert (per_second.tolist(), growth.tolist()) == ([150.0], [150.0])
    totals.restart()
    assert totals.over(2.0)[0].tolist() == []
