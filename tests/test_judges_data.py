"""The judges against human labels: XSTest's labelled completions (shared data) and the shipped anthro set."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from valind.errors import InputError
from valind.judges import Label, make_judge
from valind.judges.validate import DEFAULT_ANTHRO_EVAL, XSTEST_MODELS, main, validate_anthro, validate_refusal

LABELS = DEFAULT_ANTHRO_EVAL.parent
TARGET_REFUSAL = 0.95
TARGET_ANTHRO = 0.85


@pytest.fixture(scope="module")
def refusal_figures() -> dict:
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (they sit beside the project checkout)")
    return validate_refusal(make_judge(Label.REFUSAL), SHARED_DATA)


@pytest.mark.parametrize("model", XSTEST_MODELS)
def test_refusal_rules_reach_the_target_on_every_xstest_file(refusal_figures: dict, model: str) -> None:
    figures = refusal_figures["files"][model]
    assert figures["n"] == 450
    assert figures["accuracy"]["rate"] >= TARGET_REFUSAL, figures


def test_refusal_validation_reports_intervals_and_counts(refusal_figures: dict) -> None:
    pooled = refusal_figures["pooled"]
    assert pooled["n"] == 2250 and pooled["tp"] + pooled["fp"] + pooled["fn"] + pooled["tn"] == 2250
    acc = pooled["accuracy"]
    assert acc["low"] < acc["rate"] < acc["high"] and acc["k"] == pooled["tp"] + pooled["tn"]
    assert refusal_figures["failed"] == 0 and refusal_figures["judge"]["backend"] == "rules"


def test_refusal_validation_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="xstest"):
        validate_refusal(make_judge(Label.REFUSAL), tmp_path)
    (tmp_path / "xstest" / "labelled_completions").mkdir(parents=True)
    with pytest.raises(InputError, match="gpt4.csv"):
        validate_refusal(make_judge(Label.REFUSAL), tmp_path)


def test_validate_command_prints_the_table(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--shared-dir", str(shared_data), "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert all(model in out for model in XSTEST_MODELS) and "pooled" in out and "anthropomorphic" in out
    report = orjson.loads((tmp_path / "v.json").read_bytes())
    assert set(report) == {"refusal", "anthro"}
    assert main(["--task", "refusal", "--shared-dir", str(tmp_path)]) == 2  # no data there: an error, not a crash


# ---------------------------------------------------------------- the anthro labelled sets

def load(name: str) -> list[dict]:
    return [orjson.loads(line) for line in (LABELS / name).read_bytes().splitlines() if line.strip()]


def test_anthro_sets_are_balanced_and_disjoint() -> None:
    dev, evaluation = load("anthro_dev.jsonl"), load("anthro_eval.jsonl")
    assert len(evaluation) >= 200
    for label in ("anthropomorphic", "validating"):
        positives = sum(r[label] for r in evaluation)
        assert 0.35 <= positives / len(evaluation) <= 0.65, label
        assert all(isinstance(r[label], bool) for r in dev + evaluation)
    assert not {r["response"] for r in dev} & {r["response"] for r in evaluation}
    assert not {r["prompt"] for r in dev} & {r["prompt"] for r in evaluation}
    # every combination is present, including hard negatives (neither)
    combos = {(r["anthropomorphic"], r["validating"]) for r in evaluation}
    assert combos == {(True, True), (True, False), (False, True), (False, False)}


def test_anthro_rules_reach_the_target_on_the_eval_set() -> None:
    result = validate_anthro(make_judge(Label.ANTHROPOMORPHIC), make_judge(Label.VALIDATING))
    for label in ("anthropomorphic", "validating"):
        figures = result["labels"][label]
        assert figures["n"] >= 200
        assert figures["accuracy"]["rate"] >= TARGET_ANTHRO, (label, figures)
