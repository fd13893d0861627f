"""Small statistics shared by every metric the tool reports."""

from __future__ import annotations

import math
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
