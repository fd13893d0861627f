"""Value expression and crosstalk: how inducing one value changes the expression of every value.

Input, for one un-induced (base) model and each induced model: the same prompts, in the same
order, with the same ids, answered by both; per prompt and value, whether the answer expresses the
value (0/1) or, with several sampled answers per prompt, the fraction that do (a rate in [0, 1]).
``NaN`` marks a missing judgement (the extractor failed on every answer of that prompt): the pair
(base, induced) of that prompt is left out of that value's comparison and counted in ``n_missing``.

Rules, per value (one cell), over the n prompts where both models have a judgement:

- rate of a model: the mean over prompts of its per-prompt rates (for 0/1 data: k / n);
  95% CI: Wilson score interval with that mean and n = prompts (``valind.stats.wilson_interval``;
  exact Wilson for 0/1 data, conservative for rates since a [0, 1] variable with mean p has variance
  at most p(1 - p));
- change = induced rate - base rate (a difference of proportions, in [-1, 1]);
- CI of the change: paired percentile bootstrap over prompts. Each of ``n_boot`` (default 2000)
  replicates draws n prompts with replacement (multinomial counts w_i), the same draw for both models
  and for every cell, and computes ``sum_i w_i d_i / sum_i w_i`` with ``d_i = induced_i - base_i``;
  the CI is the (2.5, 97.5) percentiles of the replicates (linear interpolation). Random numbers:
  numpy ``default_rng(SeedSequence(seed).spawn(2)[0])``, drawn in blocks of 256 replicates, so a
  cell's CI depends only on (seed, n_boot, its two columns) and ``rate_difference`` on the same
  columns gives the same numbers as the crosstalk matrix;
- paired test of "no change", two-sided:
  - ``mcnemar_exact`` (default for 0/1 data): with ``n_down`` prompts 1 -> 0 and ``n_up`` prompts
    0 -> 1, ``p = min(1, 2 * P[X <= min(n_up, n_down)])``, ``X ~ Binomial(n_up + n_down, 1/2)``;
  - ``sign_flip`` (default for rates): the statistic is ``|sum_i d_i|``; under no change the sign of
    each ``d_i`` is a fair coin. With k non-zero ``d_i``: if k <= 16 all 2^k sign patterns are
    enumerated and ``p = #(|sum s_i d_i| >= |sum d_i|) / 2^k`` (exact); otherwise ``n_perm`` (default
    10,000) random patterns, the same for every cell (stream ``SeedSequence(seed).spawn(2)[1]``), and
    ``p = (1 + #(>=)) / (1 + n_perm)``. For 0/1 data with k <= 16 it equals ``mcnemar_exact``;
  ``p = 1`` when no prompt changed;
- counts: ``n`` prompts compared, ``n_up`` (induced > base), ``n_down`` (induced < base),
  ``discordant = n_up + n_down``.

Crosstalk matrix (``crosstalk``): rows = induced models (named by the value they were induced with,
or any label), columns = expressed values, one cell as above each; ``q``: Benjamini-Hochberg
adjusted p over the whole matrix (``fdr_scope="matrix"``, default) or within each row
(``"row"``); ``significant = q < alpha`` (default 0.05). The diagonal (the induced value itself)
is part of the family; ``is_target`` marks it.

Example (0/1, 10 prompts, one value)::

    base    = [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]   rate 0.2, Wilson [0.057, 0.510]
    induced = [1, 1, 1, 1, 1, 1, 1, 0, 0, 1]   rate 0.8, Wilson [0.490, 0.943]
    change 0.6; n_up = 7, n_down = 1; McNemar p = 2 * P[Bin(8, 1/2) <= 1] = 2 * 9/256 = 0.0703

``rate_difference(base, induced)`` is the same comparison for one 0/1 or rate vector per model
(refusal, over-refusal, anthropomorphic or validating language of one model against its base). For
one metric over several induced models with BH across them, pass one-column ``ExpressionMatrix``es
to ``crosstalk``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from valind.errors import InputError
from valind.stats import benjamini_hochberg, mcnemar_exact, wilson_interval

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

EXACT_SIGN_FLIP_MAX = 16  # up to 2^16 = 65,536 sign patterns per cell are enumerated exactly
_BLOCK = 256  # replicates per block; fixed so results do not depend on the number of cells
_TOL = 1e-9  # |sum| ties up to float rounding count as ">="


class PairedTest(StrEnum):
    """The paired test of "no change" (two-sided)."""

    AUTO = "auto"  # mcnemar_exact when every judgement is 0/1, else sign_flip
    MCNEMAR = "mcnemar_exact"
    SIGN_FLIP = "sign_flip"


class FdrScope(StrEnum):
    """The family over which Benjamini-Hochberg adjusts p-values."""

    MATRIX = "matrix"  # all cells of the crosstalk matrix
    ROW = "row"  # the cells of each induced model separately


@dataclass(frozen=True)
class ExpressionMatrix:
    """Per prompt and value, whether one model's answers express the value.

    ``prompt_ids``: unique ids, in the order of ``rates``' rows. ``values``: unique value names, in
    the order of its columns. ``rates``: shape (prompts, values), each entry 0/1, a rate in [0, 1]
    (the fraction of sampled answers expressing the value) or NaN (no judgement).
    ``n_samples``: judged answers per prompt (None when not known).
    """

    prompt_ids: tuple[str, ...]
    values: tuple[str, ...]
    rates: np.ndarray
    n_samples: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        rates = np.asarray(self.rates, dtype=np.float64)
        object.__setattr__(self, "prompt_ids", tuple(str(p) for p in self.prompt_ids))
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        object.__setattr__(self, "rates", rates)
        if rates.ndim != 2 or rates.shape != (len(self.prompt_ids), len(self.values)):
            raise InputError(f"rates must have shape (prompts, values) = ({len(self.prompt_ids)}, {len(self.values)}), got {rates.shape}")
        _check_unique(self.prompt_ids, "prompt id")
        _check_unique(self.values, "value")
        _check_rates(rates, "rates")

    @property
    def binary(self) -> bool:
        """Whether every judgement present is 0 or 1."""
        r = self.rates[~np.isnan(self.rates)]
        return bool(np.all((r == 0.0) | (r == 1.0)))

    @classmethod
    def from_responses(
        cls, prompt_ids: Sequence[str], expressed: Sequence[Iterable[str] | None], values: Sequence[str]
    ) -> ExpressionMatrix:
        """Build from one row per answer: its prompt id and the values it expresses (None: the
        extractor failed on it; it counts in no denominator). Prompts keep their first-appearance
        order; a prompt's rate for value v is (answers expressing v) / (judged answers); NaN when
        none of its answers was judged. Names outside ``values`` are ignored.

        Example: ids ``["p1", "p1", "p2"]``, expressed ``[{"empathy"}, set(), None]``, values
        ``["empathy", "humor"]`` -> rates ``[[0.5, 0.0], [nan, nan]]``, n_samples ``[2, 0]``.
        """
        if len(prompt_ids) != len(expressed):
            raise InputError(f"{len(prompt_ids)} prompt ids but {len(expressed)} answers")
        column = {v: j for j, v in enumerate(values)}
        row: dict[str, int] = {}
        for pid in prompt_ids:
            row.setdefault(str(pid), len(row))
        hits = np.zeros((len(row), len(values)))
        judged = np.zeros(len(row), dtype=np.int64)
        for pid, vals in zip(prompt_ids, expressed, strict=True):
            if vals is None:
                continue
            i = row[str(pid)]
            judged[i] += 1
            for v in set(vals):
                if v in column:
                    hits[i, column[v]] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = hits / judged[:, None]
        rates[judged == 0] = np.nan
        return cls(tuple(row), tuple(values), rates, judged)


@dataclass(frozen=True, kw_only=True)
class RateDifference:
    """One paired comparison, induced against base (rules in the module doc). Rates and changes
    are fractions (0.25 = 25%); ``low`` / ``high`` bound the 95% (``confidence``) intervals."""

    n: int  # prompts compared (both judged)
    n_missing: int  # prompts left out: a judgement missing in either model
    base_rate: float
    base_low: float
    base_high: float
    induced_rate: float
    induced_low: float
    induced_high: float
    change: float  # induced_rate - base_rate
    change_low: float  # paired bootstrap percentile CI of the change
    change_high: float
    p: float  # two-sided p-value of the paired test
    test: str  # mcnemar_exact | sign_flip (exact or Monte Carlo, see p_exact)
    p_exact: bool  # False: Monte Carlo sign-flip p
    n_up: int  # prompts where induced > base
    n_down: int  # prompts where induced < base

    @property
    def discordant(self) -> int:
        return self.n_up + self.n_down

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "discordant": self.discordant}


@dataclass(frozen=True, kw_only=True)
class CrosstalkCell(RateDifference):
    """One cell of the crosstalk matrix: the comparison for ``expressed`` in the model induced with ``induced``."""

    induced: str
    expressed: str
    is_target: bool  # expressed == induced (the intended effect)
    q: float  # Benjamini-Hochberg adjusted p (over the matrix or the row: Crosstalk.params["fdr_scope"])
    significant: bool  # q < alpha


COLUMNS = (
    "induced", "expressed", "is_target", "n", "n_missing", "base_rate", "base_low", "base_high",
    "induced_rate", "induced_low", "induced_high", "change", "change_low", "change_high",
    "p", "q", "significant", "test", "p_exact", "n_up", "n_down", "discordant",
)


@dataclass(frozen=True)
class Crosstalk:
    """The crosstalk matrix as tidy cells (row-major: induced, then expressed in ``values`` order)."""

    values: tuple[str, ...]
    induced: tuple[str, ...]
    cells: list[CrosstalkCell]
    params: dict[str, Any]
    method: str

    def matrix(self, column: str = "change") -> np.ndarray:
        """One numeric column as an array of shape (induced, values)."""
        return np.array([getattr(c, column) for c in self.cells], dtype=np.float64).reshape(len(self.induced), len(self.values))

    def records(self) -> list[dict[str, Any]]:
        return [{k: c.to_json()[k] for k in COLUMNS} for c in self.cells]

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        return pl.DataFrame(self.records())

    def to_arrow(self) -> pa.Table:
        return self.to_polars().to_arrow()

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable: method, params, names, the cells, and change / q / significant as
        nested lists [induced][values] (NaN becomes null when written with orjson)."""
        return {
            "method": self.method,
            "params": self.params,
            "values": list(self.values),
            "induced": list(self.induced),
            "cells": self.records(),
            "matrix": {
                "change": self.matrix("change").tolist(),
                "q": self.matrix("q").tolist(),
                "significant": self.matrix("significant").astype(bool).tolist(),
            },
        }


# ---------------------------------------------------------------- entry points


def rate_difference(
    base: Sequence[float] | np.ndarray,
    induced: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    test: PairedTest | str = PairedTest.AUTO,
    confidence: float = 0.95,
) -> RateDifference:
    """Paired comparison of one per-prompt 0/1 or rate vector per model (same prompts, same order).

    Example: ``rate_difference([0, 0, 0, 0, 0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0, 1])`` ->
    change 0.6, McNemar p 0.0703 (see the module doc).
    """
    b = np.asarray(base, dtype=np.float64)
    i = np.asarray(induced, dtype=np.float64)
    if b.ndim != 1 or i.shape != b.shape:
        raise InputError(f"base and induced must be 1-d arrays of the same length, got shapes {b.shape} and {i.shape}")
    _check_rates(b, "base")
    _check_rates(i, "induced")
    kind = _resolve_test(test, b, i)
    return _paired(b[:, None], i[:, None], kind, n_boot=n_boot, n_perm=n_perm, seed=seed, confidence=confidence, names=["(rate)"])[0]


def crosstalk(
    base: ExpressionMatrix,
    induced: Mapping[str, ExpressionMatrix],
    *,
    alpha: float = 0.05,
    fdr_scope: FdrScope | str = FdrScope.MATRIX,
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    test: PairedTest | str = PairedTest.AUTO,
    confidence: float = 0.95,
) -> Crosstalk:
    """The crosstalk matrix: every induced model against ``base``, for every value (module doc).

    ``induced``: row name (the induced value, or any label) -> that model's ExpressionMatrix over
    the same prompt ids in the same order and the same values (any column order).
    """
    if not induced:
        raise InputError("crosstalk needs at least one induced model")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}")
    scope = FdrScope(fdr_scope)
    aligned = {name: _align(base, m, name) for name, m in induced.items()}
    kind = _resolve_test(test, base.rates, *aligned.values())
    # All rows side by side in one call: the bootstrap weights and sign flips are drawn once and
    # shared by every cell (the same numbers as one rate_difference call per cell, drawn 1/cells as often).
    rows = list(aligned)
    names = [(row, v) for row in rows for v in base.values]
    diffs = _paired(
        np.tile(base.rates, (1, len(rows))), np.concatenate([aligned[r] for r in rows], axis=1), kind,
        n_boot=n_boot, n_perm=n_perm, seed=seed, confidence=confidence, names=[f"{r} / {v}" for r, v in names],
    )
    cells = [
        CrosstalkCell(**asdict(d), induced=row, expressed=v, is_target=(v == row), q=math.nan, significant=False)
        for (row, v), d in zip(names, diffs, strict=True)
    ]
    q = _adjust([c.p for c in cells], len(base.values), scope)
    cells = [_with_q(c, qi, alpha) for c, qi in zip(cells, q, strict=True)]
    params = {
        "alpha": alpha, "fdr_scope": str(scope), "n_boot": n_boot, "n_perm": n_perm, "seed": seed,
        "test": str(kind), "confidence": confidence, "n_prompts": len(base.prompt_ids),
    }
    return Crosstalk(base.values, tuple(induced), cells, params, _method(params, len(cells)))


# ---------------------------------------------------------------- the computation


def _paired(
    base: np.ndarray, induced: np.ndarray, kind: PairedTest, *, n_boot: int, n_perm: int, seed: int,
    confidence: float, names: Sequence[str],
) -> list[RateDifference]:
    """All cells of one (base, induced) pair of (prompts, cells) arrays at once."""
    if n_boot < 1 or n_perm < 1:
        raise InputError(f"n_boot and n_perm must be positive, got {n_boot} and {n_perm}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    valid = ~(np.isnan(base) | np.isnan(induced))
    n = valid.sum(axis=0)
    if np.any(n == 0):
        empty = [names[j] for j in np.flatnonzero(n == 0)]
        raise InputError(f"no prompt has a judgement from both models for: {', '.join(empty)}")
    b = np.where(valid, base, 0.0)
    i = np.where(valid, induced, 0.0)
    d = i - b
    base_rate, induced_rate = b.sum(axis=0) / n, i.sum(axis=0) / n
    z = _z(confidence)
    boot_low, boot_high = _bootstrap_ci(d, valid, n_boot, seed, confidence)
    p, exact = _p_values(d, kind, n_perm, seed)
    out = []
    for j in range(d.shape[1]):
        bl, bh = wilson_interval(float(base_rate[j]), int(n[j]), z)
        il, ih = wilson_interval(float(induced_rate[j]), int(n[j]), z)
        out.append(RateDifference(
            n=int(n[j]), n_missing=int(base.shape[0] - n[j]),
            base_rate=float(base_rate[j]), base_low=bl, base_high=bh,
            induced_rate=float(induced_rate[j]), induced_low=il, induced_high=ih,
            change=float(induced_rate[j] - base_rate[j]), change_low=float(boot_low[j]), change_high=float(boot_high[j]),
            p=float(p[j]), test=str(kind), p_exact=bool(exact[j]),
            n_up=int((d[:, j] > 0).sum()), n_down=int((d[:, j] < 0).sum()),
        ))
    return out


def _bootstrap_ci(d: np.ndarray, valid: np.ndarray, n_boot: int, seed: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the mean paired difference per column; replicate r weighs prompt i by its
    multinomial count w_ri (a resample with replacement) and takes sum(w d) / sum(w over valid)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    n_prompts = d.shape[0]
    probs = np.full(n_prompts, 1.0 / n_prompts)
    valid_f = valid.astype(np.float64)
    reps = []
    for start in range(0, n_boot, _BLOCK):
        w = rng.multinomial(n_prompts, probs, size=min(_BLOCK, n_boot - start)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append((w @ d) / (w @ valid_f))  # 0/0 -> NaN: a replicate with no valid prompt of a cell
    boot = np.concatenate(reps, axis=0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(boot, [tail, 1.0 - tail], axis=0)
    return low, high


def _p_values(d: np.ndarray, kind: PairedTest, n_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cells = d.shape[1]
    if kind is PairedTest.MCNEMAR:
        p = [mcnemar_exact(int((d[:, j] < 0).sum()), int((d[:, j] > 0).sum())) for j in range(cells)]
        return np.array(p), np.ones(cells, dtype=bool)
    p = np.ones(cells)
    exact = np.ones(cells, dtype=bool)
    observed = np.abs(d.sum(axis=0))
    sampled = []
    for j in range(cells):
        nz = d[:, j][d[:, j] != 0.0]
        if nz.size == 0:
            continue
        if nz.size <= EXACT_SIGN_FLIP_MAX:
            stats = np.abs(_sign_patterns(nz.size) @ nz)
            p[j] = float(np.mean(stats >= observed[j] - _TOL))
        else:
            sampled.append(j)
    if sampled:
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        cols = d[:, sampled]
        hits = np.zeros(len(sampled))
        for start in range(0, n_perm, _BLOCK):
            signs = rng.integers(0, 2, size=(min(_BLOCK, n_perm - start), d.shape[0])).astype(np.float64) * 2.0 - 1.0
            hits += (np.abs(signs @ cols) >= observed[sampled] - _TOL).sum(axis=0)
        p[sampled] = (1.0 + hits) / (1.0 + n_perm)
        exact[sampled] = False
    return p, exact


@lru_cache(maxsize=EXACT_SIGN_FLIP_MAX + 1)
def _sign_patterns(k: int) -> np.ndarray:
    """All 2^k vectors of +-1, shape (2^k, k)."""
    bits = (np.arange(2**k)[:, None] >> np.arange(k)[None, :]) & 1
    return bits.astype(np.float64) * 2.0 - 1.0


def _adjust(p: list[float], per_row: int, scope: FdrScope) -> list[float]:
    if scope is FdrScope.MATRIX:
        return benjamini_hochberg(p)
    return [q for start in range(0, len(p), per_row) for q in benjamini_hochberg(p[start:start + per_row])]


def _with_q(cell: CrosstalkCell, q: float, alpha: float) -> CrosstalkCell:
    return CrosstalkCell(**{**asdict(cell), "q": q, "significant": bool(q < alpha)})


# ---------------------------------------------------------------- checks and helpers


def _resolve_test(test: PairedTest | str, *arrays: np.ndarray) -> PairedTest:
    try:
        kind = PairedTest(test)
    except ValueError:
        raise InputError(f"unknown paired test {test!r}; valid: {', '.join(t.value for t in PairedTest)}") from None
    binary = all(_is_binary(a) for a in arrays)
    if kind is PairedTest.AUTO:
        return PairedTest.MCNEMAR if binary else PairedTest.SIGN_FLIP
    if kind is PairedTest.MCNEMAR and not binary:
        raise InputError("mcnemar_exact needs 0/1 judgements; these include rates strictly between 0 and 1 (use sign_flip)")
    return kind


def _is_binary(a: np.ndarray) -> bool:
    r = a[~np.isnan(a)]
    return bool(np.all((r == 0.0) | (r == 1.0)))


def _align(base: ExpressionMatrix, other: ExpressionMatrix, name: str) -> np.ndarray:
    """``other``'s rates with columns in ``base``'s value order, after checking prompts and values match."""
    if other.prompt_ids != base.prompt_ids:
        if len(other.prompt_ids) != len(base.prompt_ids):
            raise InputError(f"induced model {name!r}: {len(other.prompt_ids)} prompts, base has {len(base.prompt_ids)}")
        at = next(k for k, (a, b) in enumerate(zip(base.prompt_ids, other.prompt_ids, strict=True)) if a != b)
        raise InputError(
            f"induced model {name!r}: prompt ids differ from the base model's at row {at + 1} "
            f"({other.prompt_ids[at]!r} vs {base.prompt_ids[at]!r}); compare answers to the same prompts in the same order"
        )
    if set(other.values) != set(base.values):
        missing = sorted(set(base.values) - set(other.values))
        extra = sorted(set(other.values) - set(base.values))
        raise InputError(f"induced model {name!r}: values differ from the base model's (missing: {missing}, extra: {extra})")
    order = [other.values.index(v) for v in base.values]
    return other.rates[:, order]


def _check_unique(items: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for x in items:
        if x in seen:
            raise InputError(f"duplicate {what} {x!r}")
        seen.add(x)


def _check_rates(a: np.ndarray, what: str) -> None:
    present = a[~np.isnan(a)]
    if np.any(np.isinf(present)) or np.any((present < 0.0) | (present > 1.0)):
        raise InputError(f"{what}: every entry must be 0/1, a rate in [0, 1] or NaN (missing)")


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def _method(params: dict[str, Any], cells: int) -> str:
    conf = f"{params['confidence']:.0%}"
    test = (
        "exact McNemar test (binomial on the discordant prompts, two-sided)"
        if params["test"] == PairedTest.MCNEMAR
        else f"paired sign-flip permutation test of |sum of differences| (exact up to {EXACT_SIGN_FLIP_MAX} non-zero "
        f"differences, else {params['n_perm']} random flips; two-sided)"
    )
    family = f"all {cells} cells" if params["fdr_scope"] == FdrScope.MATRIX else "each induced model's row"
    return (
        f"Per cell, over the prompts both models answered (n = {params['n_prompts']}, fewer where a judgement is missing): "
        f"rate = mean per-prompt expression rate, {conf} Wilson score interval with n = prompts; change = induced - base; "
        f"{conf} paired percentile bootstrap CI of the change over prompts ({params['n_boot']} resamples, seed {params['seed']}, "
        f"the same resamples for both models and every cell); p: {test}; q: Benjamini-Hochberg over {family}; "
        f"significant: q < {params['alpha']}."
    )
