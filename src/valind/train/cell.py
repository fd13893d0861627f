"""Run one planned cell by its id: the entry point for launchers (accelerate, SLURM tasks).

``valind train`` writes ``train/plan.json`` (the resolved train settings, the cache folder, every
cell with its key) before it runs anything; this module runs one cell of that plan::

    python -m valind.train.cell --workspace WS --cell 'smollm2-135m-instruct/empathy/dpo+system-seed0-beta0.1'

Several GPUs for one cell (FSDP or DeepSpeed ZeRO-3; examples in ``valind/configs/``)::

    accelerate launch --config_file src/valind/configs/accelerate_fsdp.yaml \\
        -m valind.train.cell --workspace WS --cell ID

(``valind train`` does exactly this for each cell when ``train.accelerate_config`` is set.) Every
process runs the same cell; TRL shards the model and splits the batches, process 0 writes the
outputs. ``--list`` prints the cell ids of the plan.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from valind.errors import ConfigError, StageFailed, ValindError
from valind.train.config import TrainConfig
from valind.train.plan import Cell, cell_paths, finished_cell_result, plan_path
from valind.workspace import Workspace, read_json


def load_plan(ws: Workspace) -> tuple[TrainConfig, Path, dict[str, tuple[Cell, str]]]:
    """The plan `valind train` wrote: train settings, cache folder, and cells by id (with their keys)."""
    path = plan_path(ws)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `valind train -w {ws.root}` (it writes the plan) first")
    plan = read_json(path)
    cells = {}
    for entry in plan["cells"]:
        key = entry.pop("key")
        cell = Cell.from_dict(entry)
        cells[cell.id] = (cell, key)
    return TrainConfig.model_validate(plan["train"]), Path(plan["cache_dir"]), cells


def _find(cells: dict[str, tuple[Cell, str]], cell_id: str) -> tuple[Cell, str]:
    if cell_id not in cells:
        import difflib

        close = difflib.get_close_matches(cell_id, list(cells), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"no cell {cell_id!r} in the plan.{hint} Cells: {', '.join(cells)}")
    return cells[cell_id]


def run_planned_cell(workspace: str, cell_id: str) -> dict[str, Any]:
    """Run one cell of the workspace's plan (a SLURM array task calls this); returns what it did.

    With ``accelerate_config`` in the plan, the cell runs under ``accelerate launch`` in a child
    process (all GPUs of the task) and the result is read back from its run_config.json.
    """
    from valind.train.run import run_cell
    from valind.train.sweep import accelerate_command

    ws = Workspace(workspace)
    train, cache_dir, cells = load_plan(ws)
    cell, key = _find(cells, cell_id)
    if train.accelerate_config is not None:
        completed = subprocess.run(accelerate_command(train.accelerate_config, ws, cell_id), check=False)
        if completed.returncode != 0:
            raise StageFailed(f"cell {cell_id}: `accelerate launch` exited with status {completed.returncode}")
        return finished_cell_result(cell_paths(ws, cell), cell)
    result = run_cell(cell, train, ws, cache_dir, key, _print_progress)
    return {"state": result.state, "seconds": result.seconds, "reference": result.reference, "final_log": result.final_log}


def _print_progress(description: str, total: int | None) -> Any:
    """Progress for batch logs: one line every 10% of the steps."""
    every = max(1, (total or 10) // 10)

    def update(position: int) -> None:
        if position % every == 0 or position == total:
            print(f"{description}: step {position}/{total}", flush=True)

    return update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m valind.train.cell", description="Run one cell of a workspace's training plan.")
    parser.add_argument("--workspace", "-w", required=True, help="Workspace folder (holds train/plan.json).")
    parser.add_argument("--cell", help="Cell id, as listed by --list or `valind train --dry-run`.")
    parser.add_argument("--list", action="store_true", help="Print the cell ids of the plan and exit.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ws = Workspace(args.workspace)
    try:
        if args.list:
            for cell_id in load_plan(ws)[2]:
                print(cell_id)
            return 0
        if not args.cell:
            parser.error("--cell is required (or --list)")
        _run_in_this_process(ws, args.cell)
    except ValindError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _run_in_this_process(ws: Workspace, cell_id: str) -> None:
    """Run the cell here, never relaunching: under `accelerate launch` this is one of the N processes."""
    from valind.train.run import run_cell

    train, cache_dir, cells = load_plan(ws)
    cell, key = _find(cells, cell_id)
    result = run_cell(cell, train, ws, cache_dir, key, _print_progress)
    print(f"{cell_id}: {result.state} in {result.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
