"""What the report reads from a workspace, as plain records; every input is optional.

Sources (each written by the stage named):

- ``manifest.json`` (every stage): resolved config, package versions, git state, input fingerprints;
- ``subsets/stats.csv`` (subsets): one row per vocabulary value;
- ``evaluate/summary.json`` (evaluate): per model cell its rates (Wilson CIs), the crosstalk matrices,
  the judged changes against the base model, QA, the extractor and judge identities;
- ``generate/<cell>/<suite>.parquet`` (generate) and ``evaluate/<cell>/samples.parquet`` (evaluate):
  answers and their judgements, for the example generations;
- ``train/plan.json``, ``train/<model>/<value>/<run>/train_log.jsonl`` and ``run_config.json`` (train);
- ``evaluate/frontier.parquet`` (evaluate, ``valind.metrics.frontier``);
- ``validate/scores.json`` (extractor validation).

``input_files`` lists the files one report reads, so the stage key changes whenever any of them does.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from valind.errors import InputError, ValindError
from valind.workspace import ManifestChanged, Workspace, read_json

VALUES_SUITE, UNSAFE_SUITE = "value_elicitation", "unsafe"
EXAMPLE_SUITES = (VALUES_SUITE, UNSAFE_SUITE)


@dataclass(frozen=True)
class ModelCellInfo:
    """One evaluated model cell (from ``evaluate/summary.json``); ``run`` is the training run's name
    ('dpo+system-seed0-beta0.1', '...-step20' for a snapshot), None for the base model."""

    label: str
    model: str
    kind: str
    value: str | None
    method: str | None
    run: str | None
    beta: float | None
    steps: int | None
    system_prompt: str | None
    metrics: dict[str, Any]

    @property
    def is_base(self) -> bool:
        return self.kind == "base"

    @property
    def short(self) -> str:
        """'base model' or 'empathy · dpo+system-seed0-beta0.1'."""
        return "base model" if self.is_base else f"{self.value or self.label} · {self.run or self.kind}"


@dataclass(frozen=True)
class TrainCellInfo:
    """One training cell of ``train/plan.json`` and what it left on disk."""

    model: str
    value: str
    run: str
    method: str
    done: bool
    log: list[dict[str, Any]]
    run_config: dict[str, Any] | None


def summary_path(ws: Workspace) -> Path:
    return ws.evaluate_summary  # written by valind.evaluate


def samples_path(ws: Workspace, label: str) -> Path:
    return ws.evaluate_file(label, "metrics").with_name("samples.parquet")  # as valind.evaluate writes it


def read_summary(ws: Workspace) -> dict[str, Any] | None:
    path = summary_path(ws)
    return read_json(path) if path.is_file() else None


def model_cells(summary: dict[str, Any]) -> list[ModelCellInfo]:
    cells = []
    for label, metrics in summary.get("cells", {}).items():
        c = metrics.get("cell") or {}
        train_id = c.get("train_id")
        cells.append(ModelCellInfo(
            label=label, model=c.get("base") or label, kind=c.get("kind") or "unknown", value=c.get("value"),
            method=c.get("method"), run=train_id.rsplit("/", 1)[-1] if train_id else None, beta=c.get("beta"),
            steps=c.get("steps"), system_prompt=c.get("system_prompt"), metrics=metrics,
        ))
    return cells


def model_order(configured: list[str], cells: list[ModelCellInfo]) -> list[str]:
    """The config's ``train.models`` first (in its order), then any other model the evaluation holds."""
    found = list(dict.fromkeys(c.model for c in cells))
    return [m for m in configured if m in found] + [m for m in found if m not in configured]


def read_stats(ws: Workspace) -> list[dict[str, str]] | None:
    if not ws.subsets_stats.is_file():
        return None
    with open(ws.subsets_stats, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_frontier(ws: Workspace) -> list[dict[str, Any]] | None:
    return pq.read_table(ws.frontier_file).to_pylist() if ws.frontier_file.is_file() else None


def read_validation(ws: Workspace) -> dict[str, Any] | None:
    return read_json(ws.validate_scores) if ws.validate_scores.is_file() else None


def read_manifest(ws: Workspace) -> tuple[dict[str, Any] | None, str | None]:
    """(the manifest, None), or (its raw content, why it is not trusted) when its checksum does not match."""
    try:
        return ws.read_manifest(), None
    except ManifestChanged as err:
        try:
            return read_json(ws.manifest), str(err)
        except ValindError:
            return None, str(err)


# ---------------------------------------------------------------- training cells


def _train_paths(ws: Workspace) -> list[tuple[Any, Any]]:
    """(Cell, CellPaths) for every cell of train/plan.json; [] without a plan."""
    from valind.train.plan import Cell, cell_paths, plan_path

    path = plan_path(ws)
    if not path.is_file():
        return []
    names = {f.name for f in dataclasses.fields(Cell)}  # plan entries also carry their key
    cells = [Cell.from_dict({k: v for k, v in entry.items() if k in names}) for entry in read_json(path).get("cells", [])]
    return [(cell, cell_paths(ws, cell)) for cell in cells]


def train_plan_exists(ws: Workspace) -> bool:
    from valind.train.plan import plan_path

    return plan_path(ws).is_file()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as err:
            raise InputError(f"not valid JSON ({err})", file=str(path), location=f"line {number}") from None
    return records


def training_cells(ws: Workspace) -> list[TrainCellInfo]:
    cells = []
    for cell, paths in _train_paths(ws):
        run_config = read_json(paths.run_config) if paths.run_config.is_file() else None
        cells.append(TrainCellInfo(cell.model, cell.value, cell.run_name, cell.method.value, paths.done.is_file(),
                                   read_log(paths.train_log), run_config))
    return cells


# ---------------------------------------------------------------- answers


def read_answers(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.is_file() else []


def generate_metadata(path: Path) -> dict[str, Any] | None:
    """The ``valind.generate`` Parquet metadata of a generation file (cell, generator identity, settings)."""
    if not path.is_file():
        return None
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"valind.generate")
    return orjson.loads(raw) if raw else None


# ---------------------------------------------------------------- the key


def input_files(ws: Workspace, summary: dict[str, Any] | None) -> list[Path]:
    """Every file a report reads (existing ones only), in a stable order."""
    from valind.train.plan import plan_path

    files = [ws.manifest, ws.subsets_stats, summary_path(ws), ws.frontier_file, ws.validate_scores, plan_path(ws)]
    for _, paths in _train_paths(ws):
        files += [paths.train_log, paths.run_config, paths.done]
    if summary is not None:
        for cell in model_cells(summary):
            files += [ws.generate_file(cell.label, s) for s in EXAMPLE_SUITES] + [samples_path(ws, cell.label)]
    return [p for p in dict.fromkeys(files) if p.is_file()]
