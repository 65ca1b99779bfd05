"""Basis points -> ALB weights: the rules of the conversion and its documented bound."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greentic_aws.weights import (
    ALB_MAX_WEIGHT,
    WEIGHT_RESOLUTION_BPS,
    deviation_bound_bps,
    to_alb_weights,
    to_basis_points,
)


@st.composite
def splits(draw, max_entries: int = 5) -> list[int]:
    """A valid split: 1..max_entries entries (zeros allowed) summing to exactly 10000."""
    n = draw(st.integers(min_value=1, max_value=max_entries))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=10_000), min_size=n - 1, max_size=n - 1)))
    points = [0, *cuts, 10_000]
    return [b - a for a, b in zip(points, points[1:])]


@st.composite
def skewed_splits(draw) -> list[int]:
    """Splits with tiny entries (1..10 bps) next to a large one: where rounding hurts most."""
    tiny = draw(st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=4))
    return [10_000 - sum(tiny), *tiny]


def true_deviation_bps(bps: list[int], weights: tuple[int, ...]) -> Fraction:
    total = sum(weights)
    return max(abs(Fraction(w * 10_000, total) - b) for w, b in zip(weights, bps))


def check_conversion(bps: list[int]) -> None:
    conversion = to_alb_weights(bps)
    weights = conversion.weights
    assert len(weights) == len(bps)
    assert all(0 <= w <= ALB_MAX_WEIGHT for w in weights)
    assert sum(weights) > 0
    for b, w in zip(bps, weights):
        assert (w > 0) == (b > 0), f"entry {b} bps became weight {w}"
    exact = true_deviation_bps(bps, weights)
    assert conversion.max_deviation_bps >= exact, "the reported deviation is rounded up, never down"
    assert conversion.max_deviation_bps - exact < 1
    k = sum(1 for b in bps if b > 0)
    smallest_ok = all(b * 1998 >= max(bps) for b in bps if b > 0)
    assert conversion.max_deviation_bps <= deviation_bound_bps(k, smallest_ok=smallest_ok)


@given(splits())
@settings(max_examples=300, deadline=None)
def test_any_valid_split_converts_within_the_documented_bound(bps: list[int]) -> None:
    check_conversion(bps)


@given(skewed_splits())
@settings(max_examples=150, deadline=None)
def test_tiny_entries_are_never_dropped_and_the_bound_holds(bps: list[int]) -> None:
    check_conversion(bps)


@given(splits())
@settings(max_examples=100, deadline=None)
def test_conversion_is_deterministic_and_reads_back_close_to_the_split(bps: list[int]) -> None:
    first, second = to_alb_weights(bps), to_alb_weights(list(bps))
    assert first == second
    back = to_basis_points(first.weights)
    assert sum(back) == 10_000
    # reading back rounds the exact ALB share to whole bps: at most 1 bps on top of the deviation
    assert max(abs(a - b) for a, b in zip(back, bps)) <= first.max_deviation_bps + 1


def test_two_entry_splits_are_within_ten_bps_and_within_five_from_six_bps_up() -> None:
    worst = 0
    edges = [*range(0, 60), *range(9_941, 10_001)]
    for a in sorted({*edges, *range(0, 10_001, 17)}):
        conversion = to_alb_weights([a, 10_000 - a])
        worst = max(worst, conversion.max_deviation_bps)
        if 6 <= a <= 9_994:
            assert conversion.max_deviation_bps <= 5, a
    assert worst <= 10


@pytest.mark.parametrize("bps, weights", [
    ([10_000], (999,)),
    ([5_000, 5_000], (500, 500)),
    ([9_000, 1_000], (900, 100)),
    ([2_000] * 5, (200,) * 5),
    ([0, 10_000], (0, 999)),
    ([9_999, 1], (999, 1)),
    ([9_996, 1, 1, 1, 1], (999, 1, 1, 1, 1)),
])
def test_known_conversions(bps: list[int], weights: tuple[int, ...]) -> None:
    assert to_alb_weights(bps).weights == weights


def test_multiples_of_ten_bps_are_exact() -> None:
    assert to_alb_weights([2_500, 2_500, 5_000]).max_deviation_bps == 0
    assert to_alb_weights([10, 9_990]).weights == (1, 999)


def test_thirds_are_as_close_as_integers_allow() -> None:
    conversion = to_alb_weights([3_333, 6_667])
    assert conversion.weights == (333, 666)
    assert conversion.max_deviation_bps == 1  # 3333.33 bps instead of 3333


def test_the_large_entry_pays_for_the_minimum_weight_of_tiny_ones() -> None:
    conversion = to_alb_weights([9_996, 1, 1, 1, 1])
    assert conversion.max_deviation_bps == 36  # 999/1003 = 9960.1 bps for an entry of 9996
    assert conversion.max_deviation_bps <= deviation_bound_bps(5)


def test_resolution_is_the_step_of_one_weight_unit_rounded_up() -> None:
    assert WEIGHT_RESOLUTION_BPS == 11


@pytest.mark.parametrize("bad", [[], [0, 0], [-1, 10_001]])
def test_invalid_input_is_refused(bad: list[int]) -> None:
    with pytest.raises(ValueError):
        to_alb_weights(bad)


def test_reading_weights_back_sums_to_ten_thousand() -> None:
    assert to_basis_points([333, 666]) == (3333, 6667)
    assert to_basis_points([1, 1, 1]) == (3334, 3333, 3333)
    assert to_basis_points([0, 0]) == (0, 0)
