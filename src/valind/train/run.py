"""Train one cell with TRL: DPO (``dpo``, ``dpo+system``), SFT (``sft``), or nothing (``system``).

``run_cell(cell, train, ws, cache_dir, key)`` reads the value's subset, builds the rows (system
prompt first for ``dpo+system``), and trains with ``trl.DPOTrainer`` / ``trl.SFTTrainer``: a LoRA
adapter through PEFT (the DPO reference is then the base model with the adapter disabled, no
second copy in memory) or all weights. Reference log-probs come from the shared cache
(``valind.train.reference``). It writes the cell's folder (layout in ``valind.train.plan``): the
adapter or checkpoint and ``train_log.jsonl`` first, then ``run_config.json``, then ``DONE``,
each atomically, so a cell killed at any point has no ``DONE`` and is redone by the next sweep.

Settings that only make CPU training slow are resolved here, not left to TRL's defaults (TRL 1.16
turns on bf16 autocast and gradient checkpointing even with ``use_cpu=True``): bf16 only on a CUDA
GPU with bf16 support, gradient checkpointing only on CUDA with full fine-tuning (see
bench/RESULTS.md for what each costs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from transformers import TrainerCallback

from valind.cache import Cache
from valind.models import ModelRef, resolve_model
from valind.train.config import TrainConfig
from valind.train.data import dpo_rows, read_subset, sft_rows
from valind.train.plan import (
    Cell,
    CellPaths,
    CellState,
    cell_paths,
    cell_state,
    output_checksums,
    output_sizes,
)
from valind.workspace import Workspace, atomic_write_json, hash_file, package_versions

log = logging.getLogger(__name__)

Progress = Callable[[str, int | None], Callable[[int], None]]  # (description, total) -> update(position)
KEY_FILE = "KEY"  # in work/: the cell key its checkpoints belong to
CACHE_FILE = "calls.sqlite"  # the model-call cache every stage shares, in the cache folder


@dataclass
class CellResult:
    """What running one cell did. ``state``: trained, written (``system``: no training) or skipped (already done)."""

    cell_id: str
    state: str
    seconds: float = 0.0
    reference: dict[str, int] | None = None
    final_log: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hardware:
    """Resolved device settings of a run (recorded in run_config.json)."""

    device: str
    bf16: bool
    gradient_checkpointing: bool
    dtype: str  # weights as loaded

    @classmethod
    def resolve(cls, train: TrainConfig) -> Hardware:
        import torch

        cuda = torch.cuda.is_available()
        bf16 = train.bf16 if train.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
        checkpointing = train.gradient_checkpointing if train.gradient_checkpointing is not None else cuda and not train.lora
        # LoRA: frozen base weights may live in bf16 (PEFT keeps the adapter in fp32); full fine-tuning keeps
        # fp32 master weights and autocasts the matmuls.
        dtype = "bfloat16" if bf16 and train.lora else "float32"
        return cls("cuda" if cuda else "cpu", bool(bf16), bool(checkpointing), dtype)


def run_cell(cell: Cell, train: TrainConfig, ws: Workspace, cache_dir: Path, key: str, progress: Progress | None = None) -> CellResult:
    """Run one cell unless it is already done with this ``key`` (see ``valind.train.plan.cell_key``)."""
    from accelerate import PartialState

    process = PartialState()  # under `accelerate launch` every process runs this; process 0 writes the files
    paths = cell_paths(ws, cell)
    state = cell_state(paths, key)
    if state is CellState.DONE:
        return CellResult(cell.id, "skipped")
    if process.is_main_process:
        _clear(paths, keep_checkpoints=state is CellState.PARTIAL and train.checkpoint_steps is not None, key=key)
        paths.work.mkdir(parents=True, exist_ok=True)
        (paths.work / KEY_FILE).write_text(key)
    process.wait_for_everyone()
    started = time.time()
    model = resolve_model(cell.model, cache_dir, train.model_revisions.get(cell.model))
    if not cell.method.trains:
        if process.is_main_process:
            _write_run_config(paths, cell, train, key, model, started, extra={"artifact": {"kind": "none", "path": None}})
            shutil.rmtree(paths.work)
            _write_done(paths, key, cell)
        return CellResult(cell.id, "written", time.time() - started)
    return _train(cell, train, ws, cache_dir, key, model, paths, started, progress)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars from TRL's dataset preparation (one per map call) in the middle of the sweep's own."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _clear(paths: CellPaths, keep_checkpoints: bool, key: str) -> None:
    """Remove what an earlier, unfinished or outdated run left (checkpoints of the same key stay when resuming)."""
    if not paths.root.exists():
        return
    key_file = paths.work / KEY_FILE
    resumable = keep_checkpoints and key_file.is_file() and key_file.read_text() == key
    for child in paths.root.iterdir():
        if child == paths.work and resumable:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _train(
    cell: Cell, train: TrainConfig, ws: Workspace, cache_dir: Path, key: str, model: ModelRef, paths: CellPaths,
    started: float, progress: Progress | None,
) -> CellResult:
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    from valind.train.reference import CachedReferenceDPOTrainer

    hw = Hardware.resolve(train)
    subset = ws.subset_file(cell.value)
    pairs = read_subset(subset, train.max_pairs)
    tokenizer = AutoTokenizer.from_pretrained(model.path_or_name, revision=model.revision)
    logger = _JsonlLog(paths.work / (paths.train_log.name + ".partial"), cell.id, progress)  # in work/: kept for a resume
    callbacks = [logger, _Snapshots(paths.work / paths.snapshots.name, train.snapshot_steps)] if train.snapshot_steps else [logger]

    with Cache(cache_dir / CACHE_FILE) as cache, _quiet_datasets():
        if cell.method.is_preference:
            trainer = _dpo_trainer(cell, train, hw, model, tokenizer, pairs, paths, callbacks, cache)
        else:
            trainer = _sft_trainer(cell, train, hw, model, tokenizer, pairs, paths, callbacks)
        trainer.remove_callback(PrinterCallback)  # progress and logs go to our callback, not to stdout
        reference = trainer.ref_stats.as_dict() if isinstance(trainer, CachedReferenceDPOTrainer) else None
        rows_trained = len(trainer.train_dataset)
        first = trainer.train_dataset[0]
        example = tokenizer.decode(first["prompt_ids"] if cell.method.is_preference else first["input_ids"])
        last = get_last_checkpoint(str(paths.work)) if train.checkpoint_steps else None
        trainer.train(resume_from_checkpoint=last)

        artifact = paths.adapter if train.lora else paths.full_model
        tmp = artifact.with_name(f".{artifact.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save_model(str(tmp))  # every process takes part (FSDP / ZeRO-3 gather the weights)
        trainer.accelerator.wait_for_everyone()
        if not trainer.is_world_process_zero():
            return CellResult(cell.id, "trained", time.time() - started, reference)
        os.replace(tmp, artifact)
        if train.snapshot_steps:
            os.replace(paths.work / paths.snapshots.name, paths.snapshots)
        logger.finish(paths.train_log)
        extra = {
            "artifact": {"kind": "lora_adapter" if train.lora else "full_checkpoint", "path": artifact.name},
            "data": {"subset": str(subset.relative_to(ws.root)), "fingerprint": hash_file(subset),
                     "pairs": len(pairs), "rows_trained": rows_trained,
                     "example_input": example},  # the first training prompt as the model saw it (chat template applied)
            "hardware": hw.__dict__,
            "reference_logps": reference,
            "resumed_from": Path(last).name if last else None,
            "snapshots": {str(n): str(paths.snapshot(n).relative_to(paths.root)) for n in sorted(train.snapshot_steps)},
            "steps_trained": trainer.state.global_step,
            "trl_args": orjson.loads(trainer.args.to_json_string()),
            "result": {"final_log": logger.last_step, "summary": logger.summary},
        }
    _write_run_config(paths, cell, train, key, model, started, extra)
    shutil.rmtree(paths.work, ignore_errors=True)
    _write_done(paths, key, cell)
    return CellResult(cell.id, "trained", time.time() - started, reference, logger.last_step)


def _common_args(cell: Cell, train: TrainConfig, hw: Hardware, paths: CellPaths, model: ModelRef) -> dict[str, Any]:
    """TrainingArguments shared by DPO and SFT; everything TRL would otherwise default is spelled out."""
    steps = {"max_steps": train.max_steps} if train.max_steps is not None else {"num_train_epochs": train.epochs}
    saving = (
        {"save_strategy": "steps", "save_steps": train.checkpoint_steps, "save_total_limit": 1}
        if train.checkpoint_steps else {"save_strategy": "no"}
    )
    return {
        "output_dir": str(paths.work), "use_cpu": hw.device == "cpu", "bf16": hw.bf16,
        "gradient_checkpointing": hw.gradient_checkpointing, "learning_rate": train.resolved_learning_rate,
        "per_device_train_batch_size": train.per_device_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps, "max_length": train.max_length,
        "seed": cell.seed, "data_seed": cell.seed, "logging_steps": train.logging_steps,
        "dataloader_num_workers": train.dataloader_num_workers, "report_to": [], "disable_tqdm": True,
        "model_init_kwargs": {"dtype": hw.dtype, "revision": model.revision},
        **steps, **saving,
    }


def _lora(train: TrainConfig) -> Any:
    if not train.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
        target_modules=train.lora_target_modules, task_type="CAUSAL_LM",
    )


def _dpo_trainer(
    cell: Cell, train: TrainConfig, hw: Hardware, model: ModelRef, tokenizer: Any, pairs: list[dict[str, Any]],
    paths: CellPaths, callbacks: list[Any], cache: Cache,
) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from valind.train.reference import CachedReferenceDPOTrainer

    args = _common_args(cell, train, hw, paths, model)
    config = DPOConfig(
        **args, beta=cell.beta, precompute_ref_log_probs=train.precompute_ref_logps,
        precompute_ref_batch_size=train.ref_batch_size or 2 * train.per_device_batch_size,
    )
    common = {
        "model": model.path_or_name, "args": config, "train_dataset": Dataset.from_list(dpo_rows(pairs, cell.system_prompt)),
        "processing_class": tokenizer, "peft_config": _lora(train), "callbacks": callbacks,
    }
    if train.precompute_ref_logps:
        return CachedReferenceDPOTrainer(**common, ref_cache=cache, ref_identity=model.identity)
    return DPOTrainer(**common)


def _sft_trainer(
    cell: Cell, train: TrainConfig, hw: Hardware, model: ModelRef, tokenizer: Any, pairs: list[dict[str, Any]],
    paths: CellPaths, callbacks: list[Any],
) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = _common_args(cell, train, hw, paths, model)
    return SFTTrainer(
        model=model.path_or_name, args=SFTConfig(**args), train_dataset=Dataset.from_list(sft_rows(pairs, cell.system_prompt)),
        processing_class=tokenizer, peft_config=_lora(train), callbacks=callbacks,
    )


def _write_run_config(
    paths: CellPaths, cell: Cell, train: TrainConfig, key: str, model: ModelRef, started: float, extra: dict[str, Any]
) -> None:
    """run_config.json: everything needed to use the cell later (system prompt, base model, artifact) and to redo it."""
    atomic_write_json(paths.run_config, {
        "id": cell.id,
        "key": key,
        "cell": cell.as_dict(),
        "system_prompt": cell.system_prompt,  # generation must use the same system prompt as training
        "base_model": {"spec": cell.model, "path": model.path_or_name, "revision": model.revision, "identity": model.identity},
        "train": train.model_dump(mode="json"),
        "learning_rate": train.resolved_learning_rate,
        **extra,
        "timing": {"started_at": _iso(started), "finished_at": _iso(time.time()), "seconds": round(time.time() - started, 2)},
        "versions": package_versions(),
    })


def _write_done(paths: CellPaths, key: str, cell: Cell) -> None:
    atomic_write_json(paths.done, {"key": key, "cell": cell.id, "finished_at": _iso(time.time()), "outputs": output_sizes(paths),
                                   "checksums": output_checksums(paths)})


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class _JsonlLog(TrainerCallback):
    """Appends each logging step (loss, rewards/margins, rewards/accuracies, ...) to a .partial file as one JSON
    line, and reports steps to the progress callback; ``finish`` renames the file into place."""

    def __init__(self, partial: Path, cell_id: str, progress: Progress | None) -> None:
        self.partial = partial
        self.cell_id = cell_id
        self.progress = progress
        self.update: Callable[[int], None] | None = None
        self.last_step: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._keep_until(state.global_step)
        if self.progress is not None:
            self.update = self.progress(f"train {self.cell_id}", state.max_steps)

    def _keep_until(self, step: int) -> None:
        """Start the log, keeping the lines up to ``step`` that a killed run wrote (0 unless resuming a checkpoint)."""
        lines = self.partial.read_bytes().splitlines() if self.partial.exists() else []
        kept = [line for line in lines if orjson.loads(line)["step"] <= step]
        self.partial.write_bytes(b"".join(line + b"\n" for line in kept))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.update is not None:
            self.update(state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
        if "train_runtime" in logs:  # the closing summary of trainer.train(), not a step
            self.summary = record
            return
        self.last_step = record
        with open(self.partial, "ab") as f:
            f.write(orjson.dumps(record) + b"\n")

    def finish(self, final: Path) -> None:
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, final)


class _Snapshots(TrainerCallback):
    """Saves the LoRA adapter after each of ``steps`` optimiser steps to ``folder/step<N>`` (written to a temporary
    folder, then renamed). The folder lies in work/, so a run resumed from a checkpoint keeps the snapshots it made."""

    def __init__(self, folder: Path, steps: list[int]) -> None:
        self.folder = folder
        self.steps = set(steps)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step not in self.steps or not state.is_world_process_zero:
            return
        final = self.folder / f"step{state.global_step}"
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else float(v)
