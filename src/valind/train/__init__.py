"""The train stage: induce each value into each model with TRL (DPO, DPO + system prompt, SFT) or a system prompt.

Public API:

- ``TrainConfig`` (``valind.train.config``): the ``train`` section of the run config.
- ``run_train(config: Config, ws: Workspace, dry_run: bool = False, progress: Progress | None = None) -> TrainResult``:
  runs every cell of the sweep that is not done (local or SLURM), skips finished ones; with
  ``dry_run`` only plans: ``result.cells`` (each with ``state`` done / stale / partial / todo and an
  ``estimate``) and ``result.estimate`` (cells to run, tokens to train, reference tokens).
- ``plan_cells(config: Config, ws: Workspace) -> list[Cell]``: the cells, checked against the workspace.
- ``format_plan(result: TrainResult) -> rich.table.Table``: the table the CLI prints.

A cell's outputs (``train/<model>/<value>/<run>/``, see ``valind.train.plan``): ``adapter/`` (LoRA)
or ``model/`` (full fine-tuning), ``run_config.json`` (with the ``system_prompt`` generation must use),
``train_log.jsonl``, ``DONE``. One cell from a launcher: ``python -m valind.train.cell -w WS --cell ID``.

Modules, in reading order: config (settings), plan (cells, paths, keys, done), data (rows of a
cell), reference (shared reference log-probs), run (one cell on TRL), sweep (the stage, executors),
cell (entry point for accelerate / SLURM).

``TrainConfig`` imports only pydantic; the rest loads torch, transformers and TRL on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from valind.train.config import Executor, Method, SlurmConfig, TrainConfig

if TYPE_CHECKING:
    from valind.train.plan import Cell
    from valind.train.sweep import TrainResult, format_plan, plan_cells, run_train

__all__ = ["Cell", "Executor", "Method", "SlurmConfig", "TrainConfig", "TrainResult", "format_plan", "plan_cells", "run_train"]

_LAZY = {"Cell": "valind.train.plan", "TrainResult": "valind.train.sweep", "format_plan": "valind.train.sweep",
         "plan_cells": "valind.train.sweep", "run_train": "valind.train.sweep"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'valind.train' has no attribute {name!r}")
