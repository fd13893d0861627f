"""Value expression and crosstalk statistics with known answers (valind.metrics.crosstalk)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from valind.errors import InputError
from valind.metrics.crosstalk import (
    COLUMNS,
    EXACT_SIGN_FLIP_MAX,
    ExpressionMatrix,
    FdrScope,
    PairedTest,
    crosstalk,
    rate_difference,
)
from valind.stats import benjamini_hochberg, mcnemar_exact, wilson

BASE10 = [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
INDUCED10 = [1, 1, 1, 1, 1, 1, 1, 0, 0, 1]


def _matrix(rates: np.ndarray, values: list[str]) -> ExpressionMatrix:
    return ExpressionMatrix([f"p{i}" for i in range(rates.shape[0])], values, rates)


# ---------------------------------------------------------------- one comparison


def test_rate_difference_hand_example() -> None:
    d = rate_difference(BASE10, INDUCED10)
    assert (d.n, d.n_missing, d.n_up, d.n_down, d.discordant) == (10, 0, 7, 1, 8)
    assert d.base_rate == 0.2 and d.induced_rate == 0.8
    assert d.change == pytest.approx(0.6)
    assert (d.base_low, d.base_high) == pytest.approx((wilson(2, 10).low, wilson(2, 10).high))
    assert (d.induced_low, d.induced_high) == pytest.approx((wilson(8, 10).low, wilson(8, 10).high))
    assert d.test == PairedTest.MCNEMAR and d.p_exact
    assert d.p == 18 / 256  # 2 * P[Bin(8, 1/2) <= 1] = 2 * 9 / 256
    assert d.change_low <= d.change <= d.change_high
    assert json.loads(json.dumps(d.to_json()))["discordant"] == 8


def test_planted_large_difference_is_significant_with_ci_excluding_zero() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.2).astype(float)
    induced = np.maximum(base, rng.random(300) < 0.4)  # ~0.52: a 0.3 rise
    d = rate_difference(base, induced)
    assert d.change > 0.2
    assert d.change_low > 0.0
    assert d.p < 1e-10
    # and a planted fall, on per-prompt rates (4 samples per prompt): the sign-flip test
    base_r = rng.binomial(4, 0.6, 300) / 4
    induced_r = rng.binomial(4, 0.3, 300) / 4
    d = rate_difference(base_r, induced_r)
    assert d.test == PairedTest.SIGN_FLIP and not d.p_exact
    assert d.change_high < 0.0 and d.p <= 1 / 10_001  # no random flip reaches the observed sum


def test_identical_labels_are_no_change() -> None:
    labels = (np.random.default_rng(1).random(200) < 0.3).astype(float)
    d = rate_difference(labels, labels)
    assert d.change == 0.0 and d.p == 1.0 and d.discordant == 0
    assert d.change_low == 0.0 and d.change_high == 0.0
    r = rate_difference(labels / 2, labels / 2, test="sign_flip")
    assert r.p == 1.0


def test_permuted_labels_are_not_significant() -> None:
    rng = np.random.default_rng(2)
    base = (rng.random(400) < 0.3).astype(float)
    d = rate_difference(base, rng.permutation(base))  # same rate, prompts shuffled
    assert d.change == 0.0
    assert d.change_low < 0.0 < d.change_high
    assert d.p > 0.05


def test_null_calibration_many_independent_draws() -> None:
    """200 null cells (both models draw from the same rate, independently): about 5% of p-values
    below 0.05, about 95% of the change CIs cover 0, and BH finds nothing."""
    rng = np.random.default_rng(3)
    n, cells = 150, 200
    rate = rng.uniform(0.1, 0.6, cells)
    base = (rng.random((n, cells)) < rate).astype(float)
    induced = (rng.random((n, cells)) < rate).astype(float)
    values = [f"v{j}" for j in range(cells)]
    ct = crosstalk(_matrix(base, values), {"null": _matrix(induced, values)})
    p = ct.matrix("p").ravel()
    covered = np.mean((ct.matrix("change_low") <= 0) & (ct.matrix("change_high") >= 0))
    assert np.mean(p < 0.05) <= 0.08  # McNemar exact is slightly conservative
    assert covered >= 0.9
    assert not ct.matrix("significant").any()


def test_bootstrap_is_reproducible_with_the_seed_and_follows_the_documented_rule() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(60)
    induced = np.clip(base + rng.normal(0.05, 0.2, 60), 0, 1)
    a = rate_difference(base, induced, seed=11, n_boot=500)
    b = rate_difference(base, induced, seed=11, n_boot=500)
    c = rate_difference(base, induced, seed=12, n_boot=500)
    assert a == b
    assert (a.change_low, a.change_high) != (c.change_low, c.change_high)
    # the rule in the module doc, written out: multinomial weights in blocks of 256 from stream 0
    gen = np.random.default_rng(np.random.SeedSequence(11).spawn(2)[0])
    d = induced - base
    reps = []
    for start in range(0, 500, 256):
        w = gen.multinomial(60, np.full(60, 1 / 60), size=min(256, 500 - start))
        reps.append(w @ d / w.sum(axis=1))
    low, high = np.quantile(np.concatenate(reps), [0.025, 0.975])
    assert (a.change_low, a.change_high) == pytest.approx((low, high), abs=1e-12)


def test_sign_flip_equals_mcnemar_on_binary_data() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        base = (rng.random(40) < 0.3).astype(float)
        induced = np.where(rng.random(40) < 0.3, 1 - base, base)
        flip = rate_difference(base, induced, test="sign_flip")
        exact = mcnemar_exact(flip.n_down, flip.n_up)
        if flip.discordant <= EXACT_SIGN_FLIP_MAX:
            assert flip.p_exact and flip.p == pytest.approx(exact, abs=1e-12)
        else:  # Monte Carlo with 10,000 flips: within a few standard errors
            assert not flip.p_exact and flip.p == pytest.approx(exact, abs=0.015)


def test_sign_flip_exact_hand_example() -> None:
    # differences d = (+0.5, +0.5, +0.25, -0.25, 0): |sum| = 1.0. Of the 2^4 sign patterns of the
    # four non-zero ones, |sum| >= 1 needs both 0.5s with the same sign (2 ways) and the 0.25 pair
    # not pulling against them (3 of its 4 patterns): 6 / 16.
    base = np.array([0.0, 0.25, 0.5, 0.5, 0.75])
    induced = np.array([0.5, 0.75, 0.75, 0.25, 0.75])
    d = rate_difference(base, induced)
    sums = [abs(0.5 * a + 0.5 * b + 0.25 * c - 0.25 * e) for a in (1, -1) for b in (1, -1) for c in (1, -1) for e in (1, -1)]
    assert d.test == PairedTest.SIGN_FLIP and d.p_exact
    assert d.p == sum(s >= 1.0 for s in sums) / 16 == 6 / 16
    assert (d.n_up, d.n_down, d.n) == (3, 1, 5)


def test_missing_judgements_are_dropped_per_pair() -> None:
    base = np.array(BASE10 + [np.nan, 1.0], dtype=float)
    induced = np.array(INDUCED10 + [1.0, np.nan], dtype=float)
    d = rate_difference(base, induced)
    ref = rate_difference(BASE10, INDUCED10)
    assert (d.n, d.n_missing) == (10, 2)
    assert (d.base_rate, d.induced_rate, d.p) == (ref.base_rate, ref.induced_rate, ref.p)
    with pytest.raises(InputError, match="no prompt has a judgement"):
        rate_difference([np.nan, 1.0], [0.0, np.nan])


def test_rate_difference_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="same length"):
        rate_difference([0, 1], [0, 1, 1])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        rate_difference([0, 2], [0, 1])
    with pytest.raises(InputError, match="needs 0/1"):
        rate_difference([0, 0.5], [0, 1], test="mcnemar_exact")
    with pytest.raises(InputError, match="valid: auto, mcnemar_exact, sign_flip"):
        rate_difference([0, 1], [0, 1], test="wilcoxon")


# ---------------------------------------------------------------- the matrix


VALUES = ["empathy", "understanding", "humor", "honesty", "creativity"]


def _planted() -> tuple[ExpressionMatrix, dict[str, ExpressionMatrix]]:
    """Base rates 0.3 for every value; inducing empathy raises empathy and understanding and
    lowers humor; inducing discretion lowers humor; everything else is the base column shuffled."""
    rng = np.random.default_rng(6)
    n = 400
    base = (rng.random((n, len(VALUES))) < 0.3).astype(float)

    def induced(up: list[str], down: list[str]) -> ExpressionMatrix:
        m = np.stack([rng.permutation(base[:, j]) for j in range(len(VALUES))], axis=1)
        for v in up:
            j = VALUES.index(v)
            m[:, j] = np.maximum(base[:, j], rng.random(n) < 0.5)
        for v in down:
            j = VALUES.index(v)
            m[:, j] = base[:, j] * (rng.random(n) < 0.3)
        order = VALUES[::-1]  # columns in another order: aligned by name
        return ExpressionMatrix([f"p{i}" for i in range(n)], order, m[:, [VALUES.index(v) for v in order]])

    rows = {"empathy": induced(["empathy", "understanding"], ["humor"]), "discretion": induced([], ["humor"])}
    return _matrix(base, VALUES), rows


def test_crosstalk_finds_exactly_the_planted_cells() -> None:
    base, rows = _planted()
    ct = crosstalk(base, rows)
    found = {(c.induced, c.expressed) for c in ct.cells if c.significant}
    assert found == {("empathy", "empathy"), ("empathy", "understanding"), ("empathy", "humor"), ("discretion", "humor")}
    for c in ct.cells:
        if c.significant:
            assert c.change_low > 0 or c.change_high < 0  # CI excludes 0
    change = ct.matrix("change")
    assert change.shape == (2, 5)
    assert change[0, VALUES.index("understanding")] > 0.2 and change[1, VALUES.index("humor")] < -0.15
    assert [c.is_target for c in ct.cells[:5]] == [True, False, False, False, False]
    assert all(c.n == 400 and c.test == PairedTest.MCNEMAR for c in ct.cells)


def test_crosstalk_bh_scope_matrix_and_row() -> None:
    base, rows = _planted()
    whole = crosstalk(base, rows)
    per_row = crosstalk(base, rows, fdr_scope="row")
    p = [c.p for c in whole.cells]
    assert [c.q for c in whole.cells] == pytest.approx(benjamini_hochberg(p))
    assert [c.q for c in per_row.cells] == pytest.approx(benjamini_hochberg(p[:5]) + benjamini_hochberg(p[5:]))
    assert whole.params["fdr_scope"] == FdrScope.MATRIX and per_row.params["fdr_scope"] == "row"
    assert "each induced model's row" in per_row.method
    strict = crosstalk(base, rows, alpha=1e-30)
    assert all(c.significant == (c.q < 1e-30) for c in strict.cells)


def test_crosstalk_cell_equals_rate_difference_on_the_same_columns() -> None:
    base, rows = _planted()
    ct = crosstalk(base, rows, seed=3, n_boot=300)
    j = VALUES.index("humor")
    cell = next(c for c in ct.cells if c.induced == "discretion" and c.expressed == "humor")
    col = rows["discretion"].rates[:, rows["discretion"].values.index("humor")]
    d = rate_difference(base.rates[:, j], col, seed=3, n_boot=300)
    assert (cell.change, cell.change_low, cell.change_high, cell.p) == (d.change, d.change_low, d.change_high, d.p)


def test_crosstalk_outputs_table_and_json() -> None:
    base, rows = _planted()
    ct = crosstalk(base, rows, n_boot=200)
    df = ct.to_polars()
    assert tuple(df.columns) == COLUMNS and df.height == 10
    assert ct.to_arrow().num_rows == 10
    out = json.loads(json.dumps(ct.to_json(), allow_nan=False))
    assert out["method"].startswith("Per cell") and "McNemar" in out["method"] and "Benjamini-Hochberg over all 10 cells" in out["method"]
    assert out["params"] == {
        "alpha": 0.05, "fdr_scope": "matrix", "n_boot": 200, "n_perm": 10_000, "seed": 0,
        "test": "mcnemar_exact", "confidence": 0.95, "n_prompts": 400,
    }
    assert out["values"] == VALUES and out["induced"] == ["empathy", "discretion"]
    assert len(out["matrix"]["change"]) == 2 and len(out["matrix"]["q"][0]) == 5
    assert out["cells"][0]["expressed"] == "empathy" and set(out["cells"][0]) == set(COLUMNS)


def test_crosstalk_on_rates_uses_sign_flip() -> None:
    rng = np.random.default_rng(8)
    n = 120
    base = rng.binomial(3, 0.3, (n, 3)) / 3
    up = base.copy()
    up[:, 0] = rng.binomial(3, 0.8, n) / 3
    ct = crosstalk(_matrix(base, ["a", "b", "c"]), {"a": _matrix(up, ["a", "b", "c"])})
    assert ct.params["test"] == "sign_flip" and "sign-flip" in ct.method
    assert [c.significant for c in ct.cells] == [True, False, False]
    assert ct.cells[1].p == 1.0 and ct.cells[1].discordant == 0  # untouched columns


def test_crosstalk_checks_prompts_and_values() -> None:
    base, rows = _planted()
    m = rows["empathy"]
    shifted = ExpressionMatrix(m.prompt_ids[1:] + m.prompt_ids[:1], m.values, m.rates)
    with pytest.raises(InputError, match=r"prompt ids differ from the base model's at row 1 \('p1' vs 'p0'\)"):
        crosstalk(base, {"empathy": shifted})
    short = ExpressionMatrix(m.prompt_ids[:-1], m.values, m.rates[:-1])
    with pytest.raises(InputError, match="399 prompts, base has 400"):
        crosstalk(base, {"empathy": short})
    fewer = ExpressionMatrix(m.prompt_ids, m.values[:-1], m.rates[:, :-1])
    with pytest.raises(InputError, match=r"missing: \['empathy'\]"):
        crosstalk(base, {"empathy": fewer})
    with pytest.raises(InputError, match="at least one induced model"):
        crosstalk(base, {})
    with pytest.raises(ValueError):
        crosstalk(base, rows, fdr_scope="column")


def test_expression_matrix_validation_and_from_responses() -> None:
    m = ExpressionMatrix.from_responses(
        ["p1", "p1", "p2", "p3", "p3"],
        [{"empathy"}, set(), None, ["humor", "humor", "unknown"], {"empathy", "humor"}],
        ["empathy", "humor"],
    )
    assert m.prompt_ids == ("p1", "p2", "p3")
    np.testing.assert_array_equal(m.n_samples, [2, 0, 2])
    np.testing.assert_array_equal(m.rates[0], [0.5, 0.0])
    assert np.isnan(m.rates[1]).all()
    np.testing.assert_array_equal(m.rates[2], [0.5, 1.0])
    assert not m.binary
    with pytest.raises(InputError, match="duplicate prompt id 'a'"):
        ExpressionMatrix(["a", "a"], ["v"], np.zeros((2, 1)))
    with pytest.raises(InputError, match="shape"):
        ExpressionMatrix(["a", "b"], ["v"], np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ExpressionMatrix(["a"], ["v"], np.array([[math.inf]]))


def test_crosstalk_missing_judgements_only_affect_their_cells() -> None:
    base, rows = _planted()
    m = rows["discretion"]
    rates = m.rates.copy()
    rates[:7, m.values.index("humor")] = np.nan  # the extractor failed on 7 prompts for humor
    ct = crosstalk(base, {"discretion": ExpressionMatrix(m.prompt_ids, m.values, rates)})
    by_value = {c.expressed: c for c in ct.cells}
    assert (by_value["humor"].n, by_value["humor"].n_missing) == (393, 7)
    assert all(c.n == 400 and c.n_missing == 0 for v, c in by_value.items() if v != "humor")
    j = VALUES.index("humor")
    ref = rate_difference(base.rates[:, j], rates[:, m.values.index("humor")])
    assert (by_value["humor"].change, by_value["humor"].change_low, by_value["humor"].p) == (ref.change, ref.change_low, ref.p)
