"""The train stage: plan the sweep, skip finished cells, run the rest locally or as a SLURM job array.

``run_train(config, ws)``:

1. plans the cells (models x values x methods x seeds x betas, see ``valind.train.plan``) and checks
   the inputs: every value has a non-empty subset file, every model spec can be loaded;
2. computes each cell's key (model identity, subset fingerprint, settings) and state: done,
   stale (finished with other settings), partial (killed or failed: redone), todo;
3. with ``dry_run``, stops there and returns the plan with an estimate of the work;
4. writes ``train/plan.json`` (what ``python -m valind.train.cell`` reads) and runs every cell
   that is not done: one after another in this process (``executor: local``; each under
   ``accelerate launch`` when ``accelerate_config`` is set), or one SLURM array task per cell
   through submitit (``executor: slurm``);
5. writes ``train/summary.json``, records the stage and updates the manifest; raises StageFailed
   naming the failed cells after the others ran.

Work estimate (dry run), per training cell: tokens to train = sequences per step x mean tokens x
steps, where sequences per step = 2 x per_device_batch_size x gradient_accumulation_steps for DPO
(chosen and rejected), half that for SFT, and steps = max_steps, or pairs / batch x epochs; the
mean covers prompt + response cut at max_length, over up to 512 pairs. Reference tokens: 2 x pairs x
mean tokens per DPO cell, before the cache (cells of one model share what they can). Counts assume
one process; under ``accelerate launch`` with N processes a step sees N times the sequences.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valind.config import Config
from valind.errors import StageFailed
from valind.extract.stage import vocabulary
from valind.models import resolve_model
from valind.train.config import Executor, TrainConfig
from valind.train.plan import (
    Cell,
    CellState,
    cell_key,
    cell_paths,
    cell_state,
    finished_cell_result,
    plan_cells_for,
    plan_path,
    summary_path,
)
from valind.workspace import Workspace, atomic_write_json, hash_file, hash_json

log = logging.getLogger(__name__)

STAGE = "train"
Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class CellEstimate:
    pairs: int
    mean_tokens: float
    steps: float
    train_tokens: float
    reference_tokens: float


@dataclass
class CellReport:
    """One cell of a sweep: its state before this run and, unless a dry run, what this run did with it.

    ``outcome``: trained, written (system), skipped (already done), failed, submitted (slurm without
    waiting), or None in a dry run. ``reference``: counts of the reference pass (see ReferenceStats).
    """

    cell: Cell
    key: str
    state: CellState
    outcome: str | None = None
    seconds: float = 0.0
    error: str | None = None
    reference: dict[str, int] | None = None
    final_log: dict[str, Any] = field(default_factory=dict)
    estimate: CellEstimate | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.cell.id, "key": self.key, "state": self.state.value, "outcome": self.outcome,
            "seconds": round(self.seconds, 2), "error": self.error, "reference": self.reference,
            "final_log": self.final_log, "estimate": self.estimate.__dict__ if self.estimate else None,
        }


@dataclass
class TrainResult:
    cells: list[CellReport]
    dry_run: bool
    summary_path: Path | None = None
    job_ids: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[CellReport]:
        return [r for r in self.cells if r.state is CellState.DONE or r.outcome in ("trained", "written")]

    @property
    def skipped(self) -> bool:
        """Nothing to do: every cell was already done."""
        return bool(self.cells) and all(r.outcome == "skipped" for r in self.cells)

    @property
    def failed(self) -> list[CellReport]:
        return [r for r in self.cells if r.outcome == "failed"]

    @property
    def reference(self) -> dict[str, int]:
        """Reference sequences this run computed, and those it took from the cache (forward passes saved)."""
        ran = [r.reference for r in self.cells if r.reference]
        return {k: sum(r[k] for r in ran) for k in ("sequences", "computed", "from_cache")}

    @property
    def estimate(self) -> dict[str, float]:
        """Totals over the cells that are not done (dry run only)."""
        todo = [r.estimate for r in self.cells if r.estimate is not None and r.state is not CellState.DONE]
        return {
            "cells_to_run": sum(1 for r in self.cells if r.state is not CellState.DONE),
            "train_tokens": sum(e.train_tokens for e in todo),
            "reference_tokens": sum(e.reference_tokens for e in todo),
        }


def plan_cells(config: Config, ws: Workspace) -> list[Cell]:
    """Every cell of the sweep ``config.train`` describes, checked against the workspace's subsets."""
    return plan_cells_for(config.train, ws, vocabulary(config.extract), config.resolved_cache_dir())


def run_train(config: Config, ws: Workspace, dry_run: bool = False, progress: Progress | None = None) -> TrainResult:
    """Run every cell that is not done (see the module doc); with ``dry_run``, only report the plan."""
    train: TrainConfig = config.train
    cache_dir = config.resolved_cache_dir()
    if ws.stage_record("subsets") is not None:  # never train on a subset file damaged since it was written
        ws.require_stage("subsets", "run `valind subsets` again")
    cells = plan_cells(config, ws)
    reports = _reports(cells, train, ws, cache_dir)
    if dry_run:
        _estimate(reports, train, ws, cache_dir)
        return TrainResult(reports, dry_run=True)

    atomic_write_json(plan_path(ws), {
        "train": train.model_dump(mode="json"), "cache_dir": str(cache_dir),
        "cells": [{"key": r.key, **r.cell.as_dict()} for r in reports],
    })
    todo = [r for r in reports if r.state is not CellState.DONE]
    for report in reports:
        if report.state is CellState.DONE:
            report.outcome = "skipped"
    job_ids: list[str] = []
    if todo and train.executor is Executor.LOCAL:
        _run_local(todo, train, ws, cache_dir, progress)
    elif todo:
        job_ids = _run_slurm(todo, train, ws)

    result = TrainResult(reports, dry_run=False, summary_path=summary_path(ws), job_ids=job_ids)
    _finish(config, ws, result)
    if result.failed:
        lines = "\n".join(f"  {r.cell.id}: {r.error}" for r in result.failed)
        raise StageFailed(f"{len(result.failed)} of {len(reports)} training cells failed (details in {result.summary_path}):\n{lines}")
    return result


def _reports(cells: list[Cell], train: TrainConfig, ws: Workspace, cache_dir: Path) -> list[CellReport]:
    """Each cell with its key and state; every model is resolved once, every subset hashed once."""
    identities = {spec: resolve_model(spec, cache_dir, train.model_revisions.get(spec)).identity for spec in dict.fromkeys(c.model for c in cells)}
    fingerprints = {v: hash_file(ws.subset_file(v)) for v in dict.fromkeys(c.value for c in cells)}
    reports = []
    for cell in cells:
        key = cell_key(cell, train, identities[cell.model], fingerprints[cell.value])
        reports.append(CellReport(cell, key, cell_state(cell_paths(ws, cell), key)))
    return reports


# ---------------------------------------------------------------- executors


def _run_local(todo: list[CellReport], train: TrainConfig, ws: Workspace, cache_dir: Path, progress: Progress | None) -> None:
    from valind.train.run import run_cell

    update = progress("cells", len(todo)) if progress else None
    for i, report in enumerate(todo):
        try:
            if train.accelerate_config is not None:
                _accelerate_launch(train.accelerate_config, ws, report.cell.id)
                _fill(report, finished_cell_result(cell_paths(ws, report.cell), report.cell))
            else:
                result = run_cell(report.cell, train, ws, cache_dir, report.key, progress)
                _fill(report, {"state": result.state, "seconds": result.seconds, "reference": result.reference,
                               "final_log": result.final_log})
        except Exception as err:  # noqa: BLE001 - one failed cell must not stop the sweep; it is reported and the stage fails
            report.outcome, report.error = "failed", f"{type(err).__name__}: {err}"
            log.error("cell %s failed:\n%s", report.cell.id, traceback.format_exc())
        if update:
            update(i + 1)


def accelerate_command(accelerate_config: str, ws: Workspace, cell_id: str) -> list[str]:
    """The command that runs one cell under ``accelerate launch`` (one process per GPU of the config)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(Path(accelerate_config).expanduser()),
        "-m", "valind.train.cell", "--workspace", str(ws.root), "--cell", cell_id,
    ]


def _accelerate_launch(accelerate_config: str, ws: Workspace, cell_id: str) -> None:
    completed = subprocess.run(accelerate_command(accelerate_config, ws, cell_id), check=False)
    if completed.returncode != 0:
        raise StageFailed(f"`accelerate launch` exited with status {completed.returncode}")


def _fill(report: CellReport, result: dict[str, Any]) -> None:
    report.outcome, report.seconds = result["state"], result["seconds"]
    report.reference, report.final_log = result["reference"], result["final_log"]


def _run_slurm(todo: list[CellReport], train: TrainConfig, ws: Workspace) -> list[str]:
    """One job array, one task per cell (``valind.train.cell.run_planned_cell``); waits unless slurm.wait is false."""
    import submitit

    from valind.train.cell import run_planned_cell

    slurm = train.slurm
    executor = submitit.AutoExecutor(folder=str(ws.root / "train" / "slurm" / "%j"), cluster=slurm.cluster)
    executor.update_parameters(
        name="valind-train", timeout_min=slurm.time_min, gpus_per_node=slurm.gpus_per_node,
        cpus_per_task=slurm.cpus_per_task, mem_gb=slurm.mem_gb, slurm_array_parallelism=slurm.array_parallelism,
        slurm_setup=slurm.setup, slurm_additional_parameters=dict(slurm.additional_parameters),
        **{f"slurm_{k}": v for k, v in {"partition": slurm.partition, "account": slurm.account, "qos": slurm.qos}.items() if v},
    )
    jobs = executor.map_array(run_planned_cell, [str(ws.root)] * len(todo), [r.cell.id for r in todo])
    log.info("submitted %d cells as job array %s", len(jobs), jobs[0].job_id.split("_")[0] if jobs else "-")
    for report, job in zip(todo, jobs, strict=True):
        if not slurm.wait:
            report.outcome = "submitted"
            continue
        try:
            result = job.result()
        except Exception as err:  # noqa: BLE001 - a failed task (raised, killed, timed out): submitit re-raises its error here
            report.outcome, report.error = "failed", f"job {job.job_id}: {type(err).__name__}: {err}"
            continue
        _fill(report, result)
    return [job.job_id for job in jobs]


# ---------------------------------------------------------------- estimate and records


def _estimate(reports: list[CellReport], train: TrainConfig, ws: Workspace, cache_dir: Path) -> None:
    from transformers import AutoTokenizer

    from valind.train.data import dpo_rows, mean_sequence_tokens, read_subset

    tokenizers: dict[str, Any] = {}
    means: dict[tuple[str, str, str | None], tuple[int, float]] = {}
    for report in reports:
        cell = report.cell
        if not cell.method.trains:
            continue
        if cell.model not in tokenizers:
            ref = resolve_model(cell.model, cache_dir, train.model_revisions.get(cell.model))
            tokenizers[cell.model] = AutoTokenizer.from_pretrained(ref.path_or_name, revision=ref.revision)
        slot = (cell.model, cell.value, cell.system_prompt)
        if slot not in means:
            rows = dpo_rows(read_subset(ws.subset_file(cell.value), train.max_pairs), cell.system_prompt)
            means[slot] = (len(rows), mean_sequence_tokens(tokenizers[cell.model], rows, train.max_length))
        pairs, mean = means[slot]
        per_step = train.per_device_batch_size * train.gradient_accumulation_steps * (2 if cell.method.is_preference else 1)
        pairs_per_step = train.per_device_batch_size * train.gradient_accumulation_steps
        steps = float(train.max_steps) if train.max_steps is not None else pairs / pairs_per_step * train.epochs
        reference = 2 * pairs * mean if cell.method.is_preference and train.precompute_ref_logps else 0.0
        if cell.method.is_preference and not train.precompute_ref_logps:
            reference = steps * per_step * mean  # a reference forward in every step
        report.estimate = CellEstimate(pairs, round(mean, 1), round(steps, 1), round(steps * per_step * mean), round(reference))


def _finish(config: Config, ws: Workspace, result: TrainResult) -> None:
    """train/summary.json, the stage record (only when every cell is done) and the manifest."""
    reports = result.cells
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.outcome or "none"] = counts.get(r.outcome or "none", 0) + 1
    summary = {
        "cells": len(reports), "outcomes": counts, "reference_sequences": result.reference,
        "job_ids": result.job_ids, "per_cell": [r.as_dict() for r in reports],
    }
    atomic_write_json(summary_path(ws), summary)
    all_done = all(cell_state(cell_paths(ws, r.cell), r.key) is CellState.DONE for r in reports)
    key = hash_json(sorted(r.key for r in reports))
    if all_done and not ws.stage_done(STAGE, key):  # an unchanged sweep keeps its record (and finish time)
        ws.record_stage(STAGE, key, [cell_paths(ws, r.cell).done for r in reports],
                        {"cells": len(reports), "outcomes": counts, "reference_sequences": result.reference})
    inputs = {f"subsets/{v}": hash_file(ws.subset_file(v)) for v in dict.fromkeys(r.cell.value for r in reports)}
    ws.update_manifest(config.model_dump(mode="json"), inputs, STAGE)


def format_plan(result: TrainResult) -> Any:
    """A rich Table of the cells: state, and (dry run) the work estimate or (after a run) the outcome."""
    from rich.table import Table

    title = "train plan (dry run)" if result.dry_run else "train"
    table = Table(title=title, title_justify="left")
    table.add_column("cell", overflow="fold")
    table.add_column("state")
    if result.dry_run:
        for col in ("pairs", "mean tokens", "steps", "train tokens", "ref tokens"):
            table.add_column(col, justify="right")
    else:
        for col in ("outcome", "seconds", "loss", "margin", "ref from cache"):
            table.add_column(col, justify="right")
    for r in result.cells:
        if result.dry_run:
            e = r.estimate
            cols = [f"{e.pairs:,}", f"{e.mean_tokens:.0f}", f"{e.steps:g}", f"{e.train_tokens:,.0f}", f"{e.reference_tokens:,.0f}"] if e else ["-"] * 5
        else:
            ref = f"{r.reference['from_cache']:,}/{r.reference['sequences']:,}" if r.reference else "-"
            loss, margin = r.final_log.get("loss"), r.final_log.get("rewards/margins")
            cols = [r.outcome or "-", f"{r.seconds:.1f}", f"{loss:.4f}" if loss is not None else "-",
                    f"{margin:.4f}" if margin is not None else "-", ref]
        table.add_row(r.cell.id, r.state.value, *cols)
    return table
