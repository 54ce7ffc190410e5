"""analysis.sampling: subsample, the even picks of a few indices out of many."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gradtrace.analysis.sampling import subsample


def _by_hand(n: int, budget: int) -> list[int]:
    """i * (n - 1) / (budget - 1) in exact arithmetic, rounded half to even."""
    return sorted({round(Fraction(i * (n - 1), budget - 1)) for i in range(budget)})


def test_a_budget_that_covers_everything_keeps_every_index():
    assert subsample(5, 10) == [0, 1, 2, 3, 4]
    assert subsample(7, 7) == list(range(7))
    assert subsample(1, 1) == [0]


def test_nothing_to_pick_from_gives_nothing():
    assert subsample(0, 0) == [] and subsample(0, 5) == []


@pytest.mark.parametrize("budget", [1, 0, -3])
def test_a_budget_under_two_keeps_only_the_last_index(budget):
    assert subsample(10, budget) == [9]


def test_a_budget_of_two_keeps_the_first_and_the_last():
    assert subsample(1000, 2) == [0, 999]


@pytest.mark.parametrize("n,budget", [(11, 3), (10, 4), (3000, 180), (301, 8), (1001, 1000), (7, 6)])
def test_the_picks_are_the_exact_even_spacing_rounded_half_to_even(n, budget):
    picks = subsample(n, budget)
    assert picks == _by_hand(n, budget)
    assert len(picks) == budget                    # n > budget: no two picks coincide
    assert picks[0] == 0 and picks[-1] == n - 1
    gaps = {b - a for a, b in zip(picks, picks[1:])}
    assert max(gaps) - min(gaps) <= 1              # evenly spaced, to the rounding


def test_a_tie_rounds_to_the_even_index():
    # 3 of 4: index 1 * 3 / 2 = 1.5 goes to 2 (even), not to 1
    assert subsample(4, 3) == [0, 2, 3]
    # 3 of 6: 1 * 5 / 2 = 2.5 goes to 2
    assert subsample(6, 3) == [0, 2, 5]
