"""Even subsampling: the one way gradtrace picks a few of many (steps read, frames drawn, points fitted)."""

from __future__ import annotations

__all__ = ["subsample"]


def subsample(n: int, budget: int) -> list[int]:
    """At most ``budget`` indices of ``range(n)``, evenly spaced, the first and last kept.

    Index ``i * (n - 1) / (budget - 1)`` rounded half to even, so the picks are the same on
    every machine (the division of two integers is exact up to the rounding)."""
    if n <= budget:
        return list(range(n))
    if budget < 2:
        return [n - 1]
    return sorted({round(i * (n - 1) / (budget - 1)) for i in range(budget)})
