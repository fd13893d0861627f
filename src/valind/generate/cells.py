"""The model cells to generate with: each base model, and every finished training cell.

A ``ModelCell`` is one model as it answers: weights (a base model, a base with a LoRA adapter, or a
fully fine-tuned checkpoint) and the system prompt it answers under. ``model_cells(config, ws)``
lists, in this order for each entry of ``train.models``:

- its un-induced base model (``include_base``), label ``base--<model dir>``, no system prompt;
- every cell of the training sweep (``valind.train.plan_cells``) that is finished with its current
  key (DONE marker, same key, outputs intact), label ``<model dir>--<value>--<run>``, e.g.
  ``smollm2-135m-instruct--legal_awareness--dpo+system-seed0-beta0.1``. Its system prompt is the
  one in its ``run_config.json`` (the one it was trained with): set for ``dpo+system`` and
  ``system``, None for ``dpo`` and ``sft``. A ``system`` cell is the base model with that prompt.

Cells that are not finished (never trained, half-written, or trained with other settings) are
left out and reported by ``train_cells``. Labels are stable (the same config and workspace give
the same labels) and safe as one path component: '/' becomes '--', spaces '_'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from valind.errors import ConfigError
from valind.models import folder_fingerprint, resolve_model
from valind.workspace import Workspace, hash_file, read_json

if TYPE_CHECKING:
    from valind.config import Config

BASE_PREFIX = "base--"


class CellKind(StrEnum):
    BASE = "base"  # the un-induced base model
    SYSTEM = "system"  # the base model under a value's system prompt (method `system`: no training)
    ADAPTER = "adapter"  # the base model with a trained LoRA adapter
    FULL = "full"  # a fully fine-tuned checkpoint


@dataclass(frozen=True)
class ModelCell:
    """One model as it answers. ``base``: the ``train.models`` spec; ``path``: the adapter or checkpoint
    folder (ADAPTER, FULL); ``value`` / ``method`` / ``train_id``: the training cell (None for BASE)."""

    label: str
    kind: CellKind
    base: str
    path: Path | None = None
    system_prompt: str | None = None
    value: str | None = None
    method: str | None = None
    train_id: str | None = None
    beta: float | None = None  # DPO beta of the training cell
    steps: int | None = None  # optimiser steps the weights had when saved (a snapshot: fewer than the cell's run)
    snapshot: bool = False  # an adapter saved part-way through its training cell (train.snapshot_steps)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value, "path": str(self.path) if self.path else None}


@dataclass(frozen=True)
class NotFinished:
    """A training cell left out because it is not finished; ``state``: todo, partial or stale."""

    train_id: str
    state: str


def safe_label(name: str) -> str:
    """``name`` as one path component: 'org/model name' -> 'org--model_name'."""
    out = name.strip().replace("/", "--").replace("\\", "--").replace(" ", "_")
    if not out or out.startswith("."):
        raise ConfigError(f"{name!r} cannot be used as a cell label")
    return out


def base_label(spec: str) -> str:
    from valind.train.plan import model_dirname

    return BASE_PREFIX + safe_label(model_dirname(spec))


def model_cells(config: Config, ws: Workspace) -> list[ModelCell]:
    """The cells to generate with (see the module doc)."""
    return train_cells(config, ws)[0]


def train_cells(config: Config, ws: Workspace) -> tuple[list[ModelCell], list[NotFinished]]:
    """(cells to generate with, training cells left out because they are not finished)."""
    from valind.train import plan_cells
    from valind.train.plan import cell_key, cell_paths, cell_state, subset_values

    train = config.train
    cache_dir = config.resolved_cache_dir()
    planned = plan_cells(config, ws) if (train.values or subset_values(ws)) else []
    identities = {spec: resolve_model(spec, cache_dir).identity for spec in dict.fromkeys(c.model for c in planned)}
    fingerprints = {v: hash_file(ws.subset_file(v)) for v in dict.fromkeys(c.value for c in planned)}

    by_base: dict[str, list[ModelCell]] = {spec: [] for spec in train.models}
    if config.generate.include_base:
        for spec in train.models:
            by_base[spec].append(ModelCell(base_label(spec), CellKind.BASE, spec))
    left_out: list[NotFinished] = []
    for cell in planned:
        paths = cell_paths(ws, cell)
        state = cell_state(paths, cell_key(cell, train, identities[cell.model], fingerprints[cell.value]))
        if state.value != "done":
            left_out.append(NotFinished(cell.id, state.value))
            continue
        by_base[cell.model] += _from_train_cell(cell, paths.root, read_json(paths.run_config))

    cells = [c for spec in train.models for c in by_base[spec]]
    labels = [c.label for c in cells]
    clashes = sorted({x for x in labels if labels.count(x) > 1})
    if clashes:
        raise ConfigError(f"two model cells have the same label {clashes[0]!r}; give the models distinct names")
    return cells, left_out


def _from_train_cell(cell: Any, root: Path, saved: dict[str, Any]) -> list[ModelCell]:
    """The finished cell as it answers, then one adapter cell per snapshot (``train.snapshot_steps``), labelled
    ``<cell label>-step<N>`` with train_id ``<cell id>-step<N>`` (so each snapshot step is its own crosstalk group)."""
    from valind.train.plan import model_dirname

    artifact = saved.get("artifact") or {}
    kinds = {"lora_adapter": CellKind.ADAPTER, "full_checkpoint": CellKind.FULL, "none": CellKind.SYSTEM}
    if artifact.get("kind") not in kinds:
        raise ConfigError(f"{root / 'run_config.json'}: unknown artifact kind {artifact.get('kind')!r}; expected one of {', '.join(kinds)}")
    kind = kinds[artifact["kind"]]
    path = root / artifact["path"] if kind in (CellKind.ADAPTER, CellKind.FULL) else None
    label = f"{safe_label(model_dirname(cell.model))}--{safe_label(cell.value)}--{safe_label(cell.run_name)}"
    if kind is CellKind.SYSTEM:
        steps: int | None = 0  # a system prompt alone: no training
    else:
        steps = saved.get("steps_trained") or (saved.get("train") or {}).get("max_steps")
    main = ModelCell(label, kind, cell.model, path, saved.get("system_prompt"), cell.value, cell.method.value, cell.id,
                     cell.beta, steps)
    snapshots = [
        ModelCell(f"{label}-step{n}", CellKind.ADAPTER, cell.model, root / rel, saved.get("system_prompt"), cell.value,
                  cell.method.value, f"{cell.id}-step{n}", cell.beta, int(n), snapshot=True)
        for n, rel in sorted((saved.get("snapshots") or {}).items(), key=lambda item: int(item[0]))
    ]
    return [*snapshots, main]


def artifact_fingerprint(cell: ModelCell) -> str | None:
    """Fingerprint of a trained cell's adapter or checkpoint folder (see ``valind.models.folder_fingerprint``); None without one."""
    return folder_fingerprint(cell.path) if cell.path is not None else None
