"""The cells of a sweep, where each one writes, and when one counts as done.

A cell is one training run: (model, value, method, seed, beta). ``plan_cells`` expands the config's
lists into cells; axes a method does not use collapse (``sft`` has no beta, ``system`` neither seed
nor beta), so ``methods: [dpo+system, system]`` with two seeds gives two DPO cells and one system
cell per (model, value).

Layout of one cell (under ``Workspace.train_dir(model, value)``)::

    train/<model>/<value>/<run>/           run = 'dpo+system-seed0-beta0.1', 'sft-seed0' or 'system'
      adapter/ | model/                    LoRA adapter (+ tokenizer), or the full checkpoint; none for system
      run_config.json                      the cell, resolved settings, system prompt, data fingerprint,
                                           model identity, reference log-prob counts, timings, versions
      train_log.jsonl                      one line per logging step: loss, rewards/margins, rewards/accuracies, ...
      snapshots/step<N>/                   the adapter after N steps, for each of train.snapshot_steps (frontier)
      DONE                                 written last, atomically: the cell key, the size and checksum of every output
      work/                                TRL's output_dir while training (resumable checkpoints); removed at the end

A cell is done when DONE exists, its key equals the cell's current key (a hash of the model identity,
the subset's fingerprint, the cell and the (key) settings), and every output it lists still exists
with the recorded size and checksum. Anything else in the folder is a half-written cell and is redone.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from valind.errors import ConfigError, ValindError
from valind.models import PACKAGED_SMOLLM2, packaged_gguf, resolve_model
from valind.train.config import Method, TrainConfig
from valind.values import Vocabulary
from valind.workspace import Workspace, checksum_file, hash_json, read_json

log = logging.getLogger(__name__)

TRAIN_VERSION = 1  # bump when a change here changes what a cell produces for the same key inputs
HELDOUT_SUFFIX = ".heldout"  # subsets/<value>.heldout.parquet is a held-out split, not a training set


@dataclass(frozen=True)
class Cell:
    """One training run. ``seed`` is None for ``system``; ``beta`` is None unless the method is DPO.

    ``system_prompt`` is the rendered prompt for methods that use one, e.g.
    ``"You value empathy: The response recognises the user's feelings ..."``, else None.
    """

    model: str
    value: str
    method: Method
    seed: int | None
    beta: float | None
    system_prompt: str | None

    @property
    def run_name(self) -> str:
        parts = [self.method.value]
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        if self.beta is not None:
            parts.append(f"beta{self.beta:g}")
        return "-".join(parts)

    @property
    def id(self) -> str:
        """Unique within a sweep and stable across runs: '<model dir>/<value>/<run>'."""
        return f"{model_dirname(self.model)}/{self.value}/{self.run_name}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": self.method.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(**{**data, "method": Method(data["method"])})


class CellState(StrEnum):
    DONE = "done"  # DONE marker with the current key, all outputs intact
    STALE = "stale"  # finished, but with other settings, data or model: trained again
    PARTIAL = "partial"  # started and not finished (killed, failed): trained again
    TODO = "todo"  # never started


@dataclass(frozen=True)
class CellPaths:
    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def full_model(self) -> Path:
        return self.root / "model"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def done(self) -> Path:
        return self.root / "DONE"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def snapshots(self) -> Path:
        """snapshots/step<N>/: the LoRA adapter after N steps (train.snapshot_steps)."""
        return self.root / "snapshots"

    def snapshot(self, step: int) -> Path:
        return self.snapshots / f"step{step}"


def model_dirname(spec: str) -> str:
    """The folder name of a model under train/: the spec itself for the packaged model and Hub names
    ('org/name' becomes 'org--name' in Workspace), the folder name plus a hash of its path for a local checkpoint."""
    local = Path(spec).expanduser()
    if spec != PACKAGED_SMOLLM2 and local.is_dir():
        resolved = str(local.resolve())
        return f"{local.resolve().name}-{hashlib.blake2b(resolved.encode(), digest_size=4).hexdigest()}"
    return spec


def cell_paths(ws: Workspace, cell: Cell) -> CellPaths:
    return CellPaths(ws.train_dir(model_dirname(cell.model), cell.value) / cell.run_name)


def plan_path(ws: Workspace) -> Path:
    """train/plan.json: the resolved train settings and every cell with its key (read by `python -m valind.train.cell`)."""
    return ws.root / "train" / "plan.json"


def summary_path(ws: Workspace) -> Path:
    return ws.root / "train" / "summary.json"


# ---------------------------------------------------------------- planning


def subset_values(ws: Workspace) -> list[str]:
    """Values that have a training subset in the workspace (subsets/<value>.parquet), sorted."""
    found = []
    for path in sorted(ws.subsets_dir.glob("*.parquet")):
        if path.stem.endswith(HELDOUT_SUFFIX):
            continue
        name = path.stem.replace("_", " ")  # Workspace writes 'legal awareness' as legal_awareness.parquet
        if ws.subset_file(name) == path:
            found.append(name)
    return found


def render_system_prompt(template: str, value: str, vocabulary: Vocabulary) -> str:
    """The value's system prompt: ``template`` with {value} and {definition} filled in from the vocabulary."""
    entry = vocabulary.by_name.get(value)
    if entry is None:
        raise ConfigError(
            f"value {value!r} is not in the vocabulary {vocabulary.name!r}, so it has no definition for the system prompt; "
            f"vocabulary values: {', '.join(vocabulary.names)}"
        )
    return template.format(value=entry.name, definition=entry.definition)


def check_model_spec(spec: str, cache_dir: Path, revision: str | None) -> None:
    """Fail early, without loading or converting anything, on a model spec that cannot work."""
    if spec == PACKAGED_SMOLLM2 and revision is None:
        packaged_gguf()
    else:
        resolve_model(spec, cache_dir, revision)  # local folders: must hold a config.json; Hub names are not looked up


def plan_cells_for(train: TrainConfig, ws: Workspace, vocabulary: Vocabulary, cache_dir: Path) -> list[Cell]:
    """Every cell of the sweep, in order models x values x methods x seeds x betas (collapsed axes skipped)."""
    available = subset_values(ws)
    values = train.values or available
    if not values:
        raise ConfigError(f"no value subsets in {ws.subsets_dir}: run `valind subsets` first (or name train.values)")
    missing = [v for v in values if not ws.subset_file(v).is_file()]
    if missing:
        raise ConfigError(
            f"value {missing[0]!r} has no subset file ({ws.subset_file(missing[0])}); "
            f"values with a subset: {', '.join(available) or 'none (run `valind subsets`)'}"
        )
    for value in values:
        if pq.ParquetFile(ws.subset_file(value)).metadata.num_rows == 0:
            raise ConfigError(f"the subset of {value!r} is empty ({ws.subset_file(value)}); drop it from train.values or rebuild the subsets")
    for spec in train.models:
        check_model_spec(spec, cache_dir, train.model_revisions.get(spec))
    if train.accelerate_config is not None and not Path(train.accelerate_config).expanduser().is_file():
        raise ConfigError(f"accelerate_config file not found: {train.accelerate_config}")

    cells: list[Cell] = []
    for model in train.models:
        for value in values:
            for method in train.methods:
                prompt = render_system_prompt(train.system_prompt_template, value, vocabulary) if method.uses_system_prompt else None
                seeds: list[int | None] = list(train.seeds) if method.trains else [None]
                betas: list[float | None] = list(train.betas) if method.is_preference else [None]
                cells += [Cell(model, value, method, seed, beta, prompt) for seed in seeds for beta in betas]
    ids = [c.id for c in cells]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ConfigError(f"two models map to the same folder under train/: {clashes[0]}; give them distinct names")
    return cells


# ---------------------------------------------------------------- keys and states


def cell_key(cell: Cell, train: TrainConfig, model_identity: dict[str, Any], data_fingerprint: str) -> str:
    """Hash of everything that changes what the cell produces (see the module doc)."""
    return hash_json({
        "version": TRAIN_VERSION,
        "cell": cell.as_dict(),
        "model": model_identity,
        "data": data_fingerprint if cell.method.trains else None,
        "settings": train.key_settings() if cell.method.trains else None,
    })


def cell_state(paths: CellPaths, key: str) -> CellState:
    """A DONE marker that cannot be read, or an output missing, cut short or changed since (checksum), is PARTIAL."""
    if not paths.done.is_file():
        return CellState.PARTIAL if paths.root.exists() else CellState.TODO
    try:
        marker = read_json(paths.done)
    except ValindError as err:
        log.warning("%s; the cell is trained again", err)
        return CellState.PARTIAL
    if not isinstance(marker, dict):
        return CellState.PARTIAL
    if marker.get("key") != key:
        return CellState.STALE
    checksums = marker.get("checksums", {})  # absent in markers written before checksums
    for rel, size in marker.get("outputs", {}).items():
        out = paths.root / rel
        if not out.is_file() or out.stat().st_size != size:
            log.warning("%s: %s is missing or cut short; the cell is trained again", paths.root, rel)
            return CellState.PARTIAL
        if rel in checksums and checksum_file(out) != checksums[rel]:
            log.warning("%s: %s is not the file training wrote (checksum mismatch); the cell is trained again", paths.root, rel)
            return CellState.PARTIAL
    return CellState.DONE


def output_sizes(paths: CellPaths) -> dict[str, int]:
    """Every file the cell wrote (relative path -> bytes), for the DONE marker."""
    files = sorted(p for p in paths.root.rglob("*") if p.is_file() and paths.work not in p.parents and p != paths.done)
    return {str(p.relative_to(paths.root)): p.stat().st_size for p in files}


def output_checksums(paths: CellPaths) -> dict[str, str]:
    """The checksum of every file in ``output_sizes``, for the DONE marker."""
    return {rel: checksum_file(paths.root / rel) for rel in output_sizes(paths)}


def finished_cell_result(paths: CellPaths, cell: Cell) -> dict[str, Any]:
    """What a finished cell did, read back from its run_config.json (for cells run in another process)."""
    saved = read_json(paths.run_config)
    return {
        "state": "trained" if cell.method.trains else "written", "seconds": saved["timing"]["seconds"],
        "reference": saved.get("reference_logps"), "final_log": (saved.get("result") or {}).get("final_log") or {},
    }
