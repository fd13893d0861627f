"""``valind export``: the value subsets as Hub-ready datasets, and the trained adapters with model cards.

Layout (``Workspace.export_dir``)::

    export/
      datasets/<value>/README.md                          dataset card (YAML header: configs, features, license, tags)
      datasets/<value>/data/train-00000-of-00001.parquet   prompt / chosen / rejected (TRL conversational) + pair_id, source, flipped
      datasets/<value>/data/test-00000-of-00001.parquet    the held-out prompts, when subsets.heldout_fraction > 0
      adapters/<cell>/                                     the LoRA adapter (safetensors, config, tokenizer) + README.md model card
      export.json                                          every file with its hash, and the workspace inputs it came from

Each folder can be pushed as it is (``huggingface-cli upload <repo> export/datasets/empathy --repo-type dataset``).
A model card states the value, the method and its settings, the training data (subset, pairs, fingerprint)
and the side effects measured in this workspace, each with its count and 95% interval: the change in the
target value's expression, the largest crosstalk changes, refusal / over-refusal / anthropomorphic /
validating changes, and QA scores. Nothing is pushed: export needs no network and no token.
Pickled files (TRL's ``training_args.bin``) are left out; the settings are in the card and ``run_config.json``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import yaml

from valind import __version__
from valind.errors import ValindError
from valind.models import PACKAGED_SMOLLM2
from valind.workspace import Workspace, atomic_path, atomic_write_json, atomic_write_text, hash_file, read_json

if TYPE_CHECKING:
    from valind.config import Config

PACKAGED_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the packaged GGUF was quantised from
SKIPPED_FILES = {"training_args.bin", "README.md"}  # a pickle, and PEFT's placeholder card (replaced by ours)


@dataclass
class ExportResult:
    datasets: list[Path]
    adapters: list[Path]
    index: Path


def run_export(config: Config, ws: Workspace, values: list[str] | None = None) -> ExportResult:
    """Write export/ (see the module doc) from the workspace's subsets, training cells and evaluation."""
    from valind.generate.cells import CellKind, model_cells
    from valind.train.plan import plan_path

    report_path = ws.subsets_report
    if not report_path.is_file():
        raise ValindError(f"no subsets in {ws.root}: run `valind subsets` (or `valind run`) first")
    subsets_report = read_json(report_path)
    stats = _stats(ws)
    summary_path = ws.evaluate_summary
    summary = read_json(summary_path) if summary_path.is_file() else None
    wanted = values or list(subsets_report.get("files", {}))
    unknown = [v for v in wanted if v not in subsets_report.get("files", {})]
    if unknown:
        raise ValindError(f"no subset for {unknown[0]!r}; values with a subset: {', '.join(subsets_report.get('files', {}))}")

    index: dict[str, Any] = {"valind_version": __version__, "workspace": str(ws.root), "datasets": {}, "adapters": {}}
    datasets = []
    for value in wanted:
        folder = _export_dataset(ws, value, subsets_report, stats.get(value, {}))
        datasets.append(folder)
        index["datasets"][value] = _files(folder)
    adapters = []
    for cell in model_cells(config, ws) if plan_path(ws).is_file() else []:  # adapters only once a sweep was planned
        if cell.kind is not CellKind.ADAPTER or cell.value not in wanted or cell.path is None:
            continue
        folder = _export_adapter(ws, cell, summary)
        adapters.append(folder)
        index["adapters"][cell.label] = _files(folder)
    index_path = ws.export_index
    atomic_write_json(index_path, index)
    return ExportResult(datasets, adapters, index_path)


def _stats(ws: Workspace) -> dict[str, dict[str, str]]:
    import csv

    if not ws.subsets_stats.is_file():
        return {}
    with open(ws.subsets_stats, newline="") as f:
        return {row["value"]: row for row in csv.DictReader(f)}


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hash_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- datasets


def _export_dataset(ws: Workspace, value: str, report: dict[str, Any], stats: dict[str, str]) -> Path:
    folder = ws.export_dataset_dir(value)
    splits = {"train": ws.subset_file(value)}
    if ws.heldout_file(value).is_file():
        splits["test"] = ws.heldout_file(value)
    rows = {}
    for split, source in splits.items():
        target = folder / "data" / f"{split}-00000-of-00001.parquet"
        table = pq.read_table(source)
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        rows[split] = table.num_rows
    atomic_write_text(folder / "README.md", _dataset_card(value, rows, report, stats, {s: hash_file(p) for s, p in splits.items()}))
    return folder


def _dataset_card(value: str, rows: dict[str, int], report: dict[str, Any], stats: dict[str, str], fingerprints: dict[str, str]) -> str:
    header = {
        "license": "other",
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "value-induction", "valind", f"value:{value}"],
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in rows]}],
        "dataset_info": {
            "features": [
                {"name": name, "list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]}
                for name in ("prompt", "chosen", "rejected")
            ] + [{"name": "pair_id", "dtype": "string"}, {"name": "source", "dtype": "string"}, {"name": "flipped", "dtype": "bool"}],
            "splits": [{"name": s, "num_examples": n} for s, n in rows.items()],
        },
    }
    crit = report.get("criteria", {})
    sources = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("source:")}
    lines = [
        f"# Preference pairs for the value \"{value}\"",
        "",
        f"DPO-ready (prompt, chosen, rejected) pairs in which the response that expresses **{value}** is the chosen one, "
        "carved out of preference data by valind with a value extractor.",
        "",
        "## How it was made",
        "",
        f"- Value extractor: `{report.get('extractor_id', 'unknown')}`; each response's values were extracted, and a pair is kept "
        f"when {value} is expressed by exactly one of its two responses (XOR). When only the rejected response expressed it, "
        "chosen and rejected were swapped (`flipped` = true), so the chosen response always expresses the value.",
        f"- Pairs: {', '.join(f'{s} {n:,}' for s, n in rows.items())}; chosen side {stats.get('chosen_side', '?')}, "
        f"rejected side (flipped) {stats.get('rejected_side', '?')}.",
        f"- Sources: {', '.join(f'{k} {v}' for k, v in sources.items()) or 'see the `source` column'}.",
        f"- Selection criteria: at least {crit.get('min_pairs', '?')} pairs; valences {', '.join(crit.get('valences', []))}; "
        f"categories {', '.join(crit.get('categories', []))}; held-out fraction {crit.get('heldout_fraction', 0)} (split by prompt).",
        f"- Fingerprints: {', '.join(f'{s} `{fp}`' for s, fp in fingerprints.items())}.",
        "",
        "## Columns",
        "",
        "- `prompt`: the conversation up to the answer (list of {role, content}); `chosen` / `rejected`: the assistant turn.",
        "- `pair_id`: XXH3-128 of prompt + chosen + rejected as ingested; `source`: the input dataset; `flipped`: see above.",
        "",
        "## Licence",
        "",
        "The texts come from the source datasets named above; their licences apply.",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------- adapters


def _export_adapter(ws: Workspace, cell: Any, summary: dict[str, Any] | None) -> Path:
    folder = ws.export_adapter_dir(cell.label)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in sorted(cell.path.iterdir()):
        if file.is_file() and file.name not in SKIPPED_FILES:
            shutil.copy2(file, tmp / file.name)
    run_root = cell.path.parent.parent if cell.path.parent.name == "snapshots" else cell.path.parent
    run_config = read_json(run_root / "run_config.json")
    (tmp / "README.md").write_text(_model_card(cell, run_config, summary), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _fmt(m: dict[str, Any] | None, key: str = "rate") -> str:
    if not m:
        return "not measured"
    lo, hi = m.get("low", m.get("change_low")), m.get("high", m.get("change_high"))
    return f"{m[key]:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={m['n']})" if key == "change" else f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}] (n={m['n']})"


def _side_effects(cell: Any, summary: dict[str, Any] | None) -> list[str]:
    if summary is None or cell.label not in summary.get("cells", {}):
        return ["Not evaluated in this workspace yet (`valind evaluate`)."]
    group = f"{cell.base} | {cell.train_id.rsplit('/', 1)[-1]}"
    records = [r for r in (summary["crosstalk"].get(group) or {}).get("cells", []) if r["induced"] == cell.value]
    lines = ["Changes against the un-induced base model on the same prompts (induced - base; paired bootstrap 95% CI; "
             "q: Benjamini-Hochberg over the matrix).", ""]
    target = next((r for r in records if r["expressed"] == cell.value), None)
    if target:
        lines.append(f"- **{cell.value}** expression: {_fmt(target, 'change')}, q={target['q']:.3g}")
    others = sorted((r for r in records if r["expressed"] != cell.value), key=lambda r: -abs(r["change"]))[:5]
    for r in others:
        lines.append(f"- {r['expressed']} expression (crosstalk): {_fmt(r, 'change')}, q={r['q']:.3g}")
    for metric in ("refusal", "over_refusal", "anthropomorphic", "validating"):
        rec = next((r for r in (summary.get("judged_changes", {}).get(f"{metric} | {cell.base}") or {}).get("cells", [])
                    if r["induced"] == cell.label), None)
        lines.append(f"- {metric.replace('_', '-')} rate: {_fmt(summary['cells'][cell.label].get(metric))}"
                     + (f"; change {_fmt(rec, 'change')}, q={rec['q']:.3g}" if rec else ""))
    qa = summary.get("qa", {}).get(cell.label)
    if isinstance(qa, dict):
        for r in qa.get("results", []):
            stderr = f" ± {r['stderr']:.3f} (stderr)" if isinstance(r.get("stderr"), float) else ""
            lines.append(f"- QA {r.get('task')} {r.get('metric')}: {r.get('value', float('nan')):.3f}{stderr}, n={r.get('n')}")
    return lines


def _model_card(cell: Any, run_config: dict[str, Any], summary: dict[str, Any] | None) -> str:
    base = PACKAGED_BASE if cell.base == PACKAGED_SMOLLM2 else cell.base
    header = {
        **({"base_model": base} if not Path(base).expanduser().exists() else {}),
        "library_name": "peft",
        "license": "other",
        "tags": ["dpo", "lora", "trl", "value-induction", "valind", f"value:{cell.value}"],
    }
    train = run_config.get("train", {})
    data = run_config.get("data", {})
    lines = [
        f"# {cell.label}",
        "",
        f"A LoRA adapter for `{base}` that induces the value **{cell.value}**, trained by valind {__version__}.",
        "",
        "## Method",
        "",
        f"- Method: `{cell.method}`" + (f" with the system prompt: \"{cell.system_prompt}\"" if cell.system_prompt else "")
        + ". Use the same system prompt at inference.",
        f"- DPO beta {cell.beta}; {cell.steps} optimiser steps" + (" (a snapshot of a longer run)" if "-step" in cell.label else "")
        + f"; learning rate {run_config.get('learning_rate')}; batch {train.get('per_device_batch_size')} x "
        f"{train.get('gradient_accumulation_steps')} accumulation; max length {train.get('max_length')}; "
        f"LoRA r={train.get('lora_r')}, alpha={train.get('lora_alpha')}, dropout={train.get('lora_dropout')}.",
        f"- Trainer: TRL `DPOTrainer` ({run_config.get('versions', {}).get('trl', '?')}), PEFT, transformers "
        f"{run_config.get('versions', {}).get('transformers', '?')}.",
        "",
        "## Data",
        "",
        f"- Subset `{data.get('subset')}` of pairs where the chosen response expresses {cell.value} "
        f"({data.get('pairs')} pairs, {data.get('rows_trained')} after tokenisation limits); fingerprint `{data.get('fingerprint')}`.",
        "",
        "## Measured side effects",
        "",
        *_side_effects(cell, summary),
        "",
        "## Provenance",
        "",
        f"- Training cell `{run_config.get('id')}`, key `{run_config.get('key')}`, trained {run_config.get('timing', {}).get('finished_at')}.",
        f"- Base model identity: `{run_config.get('base_model', {}).get('identity')}`.",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(lines) + "\n"
