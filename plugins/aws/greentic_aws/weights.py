"""Basis points -> ALB forward-action weights, and back. Pure: no I/O, no AWS.

An ALB forward action gives every target group an integer weight 0..999 and sends each one
``weight / sum(weights)`` of the requests. A split gives every revision basis points (bps)
summing to 10000. The conversion keeps the ratios as closely as integers up to 999 allow:

* a revision with 0 bps gets weight 0; a revision with more than 0 bps gets at least 1 (it is
  never silently dropped), so the sum is always positive;
* among all weight vectors ``w_i = max(1, round(b_i * M / b_max))`` for the anchor
  ``M = 1..999`` (the largest entry gets ``M``), the one with the smallest largest deviation
  ``|w_i / W - b_i / B|`` is chosen (ties: the scale closest to "bps / 10", so 9000/1000 gives
  900/100 and 5000/5000 gives 500/500). Everything is integer arithmetic, so the result is
  deterministic;
* the deviation is reported exactly, rounded up to whole basis points.

**Bound.** With ``k`` non-zero entries (1..5), the reported ``max_deviation_bps`` is at most
``10 * (k - 1)``; when every non-zero entry is at least ``b_max / 1998`` (true whenever every
non-zero entry has 6 bps or more) it is at most ``5 * (k - 1)``. Proof sketch, for the anchor
``M = 999`` candidate (the chosen vector is never worse): let ``x_i = b_i * 999 / b_max``,
``e_i = w_i - x_i``; the largest entries are exact (``e = 0``), every other entry has
``|e_i| <= 1/2``, or ``|e_i| < 1`` when it was raised to the minimum weight 1. With
``W = sum(w) >= 999 + (k - 1)`` and ``p_i = b_i / B``, the deviation of entry ``i`` is
``|e_i - p_i * sum(e)| / W``, and ``|e_i - p_i * sum(e)| < max(1, k - 2) <= k - 1`` (halve it
without raised entries), which gives ``< 10000 * (k - 1) / (998 + k) <= 10 * (k - 1)`` bps.
The general bound is nearly tight: 9996/1/1/1/1 cannot do better than 999/1/1/1/1, which
gives the large entry 36 bps too little, because four entries of weight 1 out of 1003 are
worth 40 bps.

The effective step of one weight unit at full scale is ``10000 / 999 = 10.01`` bps, reported
as the descriptor's ``weight_resolution_bps`` (rounded up: 11).
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs

ALB_MAX_WEIGHT = 999
#: The ALB limit of target groups in one forward action (moto does not enforce it; we do).
MAX_TARGET_GROUPS_PER_ACTION = 5
TOTAL_BPS = 10_000
#: The coarsest step one weight unit can be, in basis points, rounded up (10000 / 999 -> 11).
WEIGHT_RESOLUTION_BPS = math.ceil(TOTAL_BPS / ALB_MAX_WEIGHT)


@attrs.frozen
class Conversion:
    """ALB weights for a split, and how far the ALB's ratios are from the split."""

    weights: tuple[int, ...]
    #: Largest ``|weight_i / sum(weights) - bps_i / sum(bps)|``, in bps, rounded up.
    max_deviation_bps: int
    #: The effective share of every entry in bps (exact, as a float, for reports).
    effective_bps: tuple[float, ...]


def deviation_bound_bps(nonzero_entries: int, *, smallest_ok: bool = False) -> int:
    """The documented upper bound of ``max_deviation_bps`` for ``nonzero_entries`` entries > 0.

    ``smallest_ok``: every non-zero entry is at least ``b_max / 1998`` (e.g. all are >= 6 bps).
    """
    k = max(nonzero_entries, 1)
    return (5 if smallest_ok else 10) * (k - 1)


def to_alb_weights(bps: Sequence[int]) -> Conversion:
    """Convert basis points (non-negative, positive sum; normally summing to 10000) to ALB weights."""
    values = [int(b) for b in bps]
    if not values:
        raise ValueError("a split needs at least one entry")
    if any(b < 0 for b in values):
        raise ValueError(f"basis points must not be negative: {values}")
    total = sum(values)
    if total <= 0:
        raise ValueError("basis points must have a positive sum")
    b_max = max(values)
    nonzero = [b for b in values if b > 0]
    doubled = [2 * b for b in nonzero]
    twice_max = 2 * b_max
    target_anchor = b_max * (TOTAL_BPS // 10)  # compared with M * total: "M = bps / 10" when total is 10000

    best: tuple[int, int, int, list[int]] | None = None  # (num, W, closeness, weights of nonzero entries)
    for anchor in range(1, ALB_MAX_WEIGHT + 1):
        weights = [max(1, (d * anchor + b_max) // twice_max) for d in doubled]  # round half up, at least 1
        w_total = sum(weights)
        # deviation of entry i (as a share) = |w_i * total - b_i * W| / (W * total); zero entries are exact
        num = max([abs(w * total - b * w_total) for w, b in zip(weights, nonzero)])
        closeness = abs(anchor * total - target_anchor)
        if best is not None:
            lhs, rhs = num * best[1], best[0] * w_total  # compare num / w_total with best num / best W
            if lhs > rhs or (lhs == rhs and closeness >= best[2]):
                continue
        best = (num, w_total, closeness, weights)
    assert best is not None
    num, w_total, _, chosen = best
    picked = iter(chosen)
    weights = [next(picked) if b > 0 else 0 for b in values]
    deviation = -((-num * TOTAL_BPS) // (w_total * total))  # ceil
    effective = tuple(TOTAL_BPS * w / w_total for w in weights)
    return Conversion(weights=tuple(weights), max_deviation_bps=int(deviation), effective_bps=effective)


def to_basis_points(weights: Sequence[int]) -> tuple[int, ...]:
    """The share of each ALB weight in basis points (largest remainder: sums to 10000 when any is > 0)."""
    values = [int(w) for w in weights]
    if any(w < 0 for w in values):
        raise ValueError(f"weights must not be negative: {values}")
    total = sum(values)
    if total == 0:
        return tuple(0 for _ in values)
    floors = [w * TOTAL_BPS // total for w in values]
    remainders = [w * TOTAL_BPS % total for w in values]
    missing = TOTAL_BPS - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-remainders[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return tuple(floors)
