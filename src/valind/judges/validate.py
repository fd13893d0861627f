"""How well the judges agree with human labels: accuracy, precision and recall with 95% Wilson intervals.

- Refusal: XSTest's human-labelled completions (``xstest/labelled_completions/<model>.csv`` under
  the shared data folder; columns id, type, prompt, completion, annotation_1, annotation_2,
  agreement, final_label, gpt4_label). Binary truth: ``final_label`` is ``2_full_refusal`` or
  ``3_partial_refusal``. Each completion is judged with its prompt as the user turn. Figures per
  model file and pooled.
- Anthropomorphic and validating: the project's labelled set
  (``data/labels/anthro_eval.jsonl``: response, prompt, anthropomorphic, validating).

accuracy = correct / all; precision = true "yes" / predicted "yes"; recall = true "yes" / labelled
"yes". A judgement that failed (LLM judges) counts as "no" and is counted under ``failed``.

Command line (the CLI will call the same as ``valind score refusal-check``)::

    python -m valind.judges.validate                      # both, shared data at ../shared/data
    python -m valind.judges.validate --task refusal --shared-dir /path/to/shared/data --json out.json
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from valind.errors import InputError, ValindError
from valind.extract.base import Item
from valind.extract.score import parse_line
from valind.judges.base import Judge, Label, make_judge
from valind.judges.score import run_judge
from valind.schema import user
from valind.stats import Proportion, wilson
from valind.workspace import atomic_write_json

XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
XSTEST_DIR = Path("xstest") / "labelled_completions"
REFUSAL_LABELS = frozenset({"2_full_refusal", "3_partial_refusal"})
XSTEST_COLUMNS = ("id", "type", "prompt", "completion", "final_label")
DEFAULT_SHARED_DIR = Path("../shared/data")  # relative to the project root, where the shared data sets sit
DEFAULT_ANTHRO_EVAL = Path(__file__).resolve().parents[1] / "data" / "labels" / "anthro_eval.jsonl"
METHOD = ('accuracy = correct / all; precision = true "yes" / predicted "yes"; recall = true "yes" / labelled "yes"; '
          "95% Wilson intervals; failed judgements count as \"no\"")


def binary_metrics(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, Any]:
    """Accuracy, precision, recall (as Proportion dicts) and the confusion counts."""
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    tn = len(truth) - tp - fp - fn
    return {
        "n": len(truth), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": wilson(tp + tn, len(truth))._asdict(),
        "precision": wilson(tp, tp + fp)._asdict(),
        "recall": wilson(tp, tp + fn)._asdict(),
    }


def xstest_dir(shared_dir: Path) -> Path:
    """The folder of XSTest's labelled completions under ``shared_dir`` (the shared data folder)."""
    folder = Path(shared_dir) / XSTEST_DIR
    if not folder.is_dir():
        raise InputError(f"XSTest labelled completions not found (expected {XSTEST_DIR}/<model>.csv there)", file=str(shared_dir))
    return folder


def load_xstest(path: Path) -> tuple[list[Item], list[bool]]:
    """Items (prompt as the user turn, completion as the response) and binary refusal truth of one file."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in XSTEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"missing columns: {', '.join(missing)}", file=str(path))
        rows = list(reader)
    items = [Item([user(r["prompt"])], r["completion"]) for r in rows]
    return items, [r["final_label"] in REFUSAL_LABELS for r in rows]


def validate_refusal(judge: Judge, shared_dir: Path) -> dict[str, Any]:
    """The refusal judge against XSTest's human labels, per model file and pooled.

    ``shared_dir``: the shared data folder (holding ``xstest/labelled_completions/``).
    Returns ``{"judge", "data", "files": {model: metrics}, "pooled": metrics, "failed", "method"}``
    with metrics as in ``binary_metrics``.
    """
    if judge.label is not Label.REFUSAL:
        raise ValueError(f"validate_refusal needs a refusal judge, got one for {judge.label.value!r}")
    folder = xstest_dir(shared_dir)
    files: dict[str, Any] = {}
    all_truth: list[bool] = []
    all_pred: list[bool] = []
    failed = 0
    for model in XSTEST_MODELS:
        path = folder / f"{model}.csv"
        if not path.is_file():
            raise InputError("no such file", file=str(path))
        items, truth = load_xstest(path)
        results = run_judge(judge, items).judgements
        predicted = [r.ok and r.decision for r in results]
        failed += sum(not r.ok for r in results)
        files[model] = binary_metrics(truth, predicted)
        all_truth += truth
        all_pred += predicted
    return {"judge": judge.identity(), "data": str(folder), "files": files, "pooled": binary_metrics(all_truth, all_pred),
            "failed": failed, "method": METHOD}


def load_anthro_labels(path: Path) -> tuple[list[Item], dict[Label, list[bool]]]:
    """Items and truth per label from a labelled JSONL file (response, prompt, anthropomorphic, validating)."""
    items: list[Item] = []
    truth: dict[Label, list[bool]] = {Label.ANTHROPOMORPHIC: [], Label.VALIDATING: []}
    for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record, item = parse_line(number, line)
        except InputError as err:
            raise err.in_file(str(path)) from None
        for label, values in truth.items():
            value = record.get(label.value)
            if not isinstance(value, bool):
                raise InputError("expected true or false", file=str(path), location=f"line {number}", field=label.value)
            values.append(value)
        items.append(item)
    return items, truth


def validate_anthro(anthropomorphic: Judge, validating: Judge, labels: Path = DEFAULT_ANTHRO_EVAL) -> dict[str, Any]:
    """Both anthro judges against the labelled set; ``{"judges", "data", "labels": {label: metrics}, "failed", "method"}``."""
    path = Path(labels)
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    items, truth = load_anthro_labels(path)
    out: dict[str, Any] = {}
    failed: dict[str, int] = {}
    identities = {}
    for judge, label in ((anthropomorphic, Label.ANTHROPOMORPHIC), (validating, Label.VALIDATING)):
        if judge.label is not label:
            raise ValueError(f"the {label.value!r} judge given is for {judge.label.value!r}")
        results = run_judge(judge, items).judgements
        out[label.value] = binary_metrics(truth[label], [r.ok and r.decision for r in results])
        failed[label.value] = sum(not r.ok for r in results)
        identities[label.value] = judge.identity()
    return {"judges": identities, "data": str(path), "labels": out, "failed": failed, "method": METHOD}


def _fmt(p: dict[str, Any]) -> str:
    return Proportion(**p).fmt()


def format_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per set, accuracy / precision / recall with intervals."""
    head = f"{'set':<18} {'accuracy':<32} {'precision':<32} {'recall':<32}"
    lines = [title, head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<18} {_fmt(m['accuracy']):<32} {_fmt(m['precision']):<32} {_fmt(m['recall']):<32}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m valind.judges.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("refusal", "anthro", "all"), default="all", help="What to validate.")
    parser.add_argument("--shared-dir", type=Path, default=DEFAULT_SHARED_DIR,
                        help="The shared data folder holding xstest/labelled_completions/ (default: ../shared/data).")
    parser.add_argument("--labels", type=Path, default=DEFAULT_ANTHRO_EVAL, help="Labelled anthro set (default: the shipped eval set).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    try:
        if args.task in ("refusal", "all"):
            result = validate_refusal(make_judge(Label.REFUSAL), args.shared_dir)
            report["refusal"] = result
            rows = {**result["files"], "pooled": result["pooled"]}
            print(format_table(f"refusal judge (rules) on XSTest labelled completions, {result['data']} (95% Wilson intervals)", rows))
            print()
        if args.task in ("anthro", "all"):
            result = validate_anthro(make_judge(Label.ANTHROPOMORPHIC), make_judge(Label.VALIDATING), args.labels)
            report["anthro"] = result
            print(format_table(f"anthro judges (rules) on {result['data']} (95% Wilson intervals)", result["labels"]))
    except ValindError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
