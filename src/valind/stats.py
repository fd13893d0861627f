"""Small statistics shared by every metric the tool reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

Z95 = 1.959963984540054


class Proportion(NamedTuple):
    """k successes out of n, the rate, and its 95% Wilson score interval."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None

    def fmt(self) -> str:
        if self.rate is None:
            return f"n/a (0/{self.n})"
        return f"{self.rate:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.k}/{self.n})"


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """Wilson score interval: well-behaved for small n and rates near 0 or 1."""
    if n == 0:
        return Proportion(k, n, None, None, None)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Proportion(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


def wilson_interval(rate: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a mean ``rate`` in [0, 1] over ``n`` units (e.g. prompts).

    For 0/1 data this is ``wilson(k, n)`` with ``k = rate * n``. For per-unit rates in [0, 1] (several
    samples per prompt) it is conservative: a variable in [0, 1] with mean p has variance at most
    p(1 - p), the Bernoulli variance the interval assumes. Example: ``wilson_interval(0.2, 50)`` ->
    ``(0.1124, 0.3304)``.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes.

    ``b``: pairs with outcome 1 before and 0 after; ``c``: 0 before and 1 after (the discordant
    pairs; concordant pairs carry no information). Under no change each discordant pair is a fair
    coin, so ``p = min(1, 2 * P[X <= min(b, c)])`` with ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when
    ``b + c = 0``. Example: ``b = 1, c = 9``: ``2 * (1 + 10) / 2**10 = 0.02148``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, got b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(b, c), m, 0.5)))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order.

    With the m non-missing p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``q_(i) = min over j >= i of min(1, p_(j) * m / j)``. Rejecting every hypothesis with
    ``q < alpha`` controls the false discovery rate at alpha (independent or positively dependent
    tests). NaN p-values stay NaN and do not count in m. Example: ``[0.01, 0.04, 0.03, 0.2]`` ->
    ``[0.04, 0.0533, 0.0533, 0.2]``.
    """
    p = [float(x) for x in p_values]
    idx = [i for i, x in enumerate(p) if not math.isnan(x)]
    for i in idx:
        if not 0.0 <= p[i] <= 1.0:
            raise ValueError(f"p-value {p[i]} at position {i} is outside [0, 1]")
    m = len(idx)
    q = [math.nan] * len(p)
    running = 1.0
    for rank, i in reversed(list(enumerate(sorted(idx, key=lambda j: p[j]), start=1))):
        running = min(running, p[i] * m / rank)
        q[i] = running
    return q
