"""Settings of the train stage: the sweep (models x values x methods x seeds x betas) and how each cell trains.

Mounted as ``Config.train``. Every field has a description; validators turn bad values into one
clear message. Settings marked (key) change what a cell produces and are part of the cell's key
(see ``valind.train.plan.cell_key``): a finished cell whose key changed is trained again. The
others (executor, batching of the reference pass, logging, checkpointing, hardware switches that
do not change the result beyond rounding) are not.
"""

from __future__ import annotations

import difflib
import string
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_LR_LORA = 5e-5  # LoRA adapters start at zero and move little per step: 10x the full fine-tuning rate
DEFAULT_LR_FULL = 5e-6  # full fine-tuning of every weight: the usual DPO range is 1e-6 .. 1e-5
DEFAULT_SYSTEM_PROMPT = "You value {value}: {definition}"


class Method(StrEnum):
    """How a value is induced in one cell.

    - ``dpo``: DPO on the value's subset, prompts as they are.
    - ``dpo+system``: DPO with a system prompt naming and defining the value first in every prompt
      (the study's set-up); the same system prompt is kept for generation later.
    - ``system``: no training; the base model with the value's system prompt (a prompting baseline).
    - ``sft``: supervised fine-tuning on the chosen responses only (no rejected, no reference model).
    """

    DPO = "dpo"
    DPO_SYSTEM = "dpo+system"
    SYSTEM = "system"
    SFT = "sft"

    @property
    def trains(self) -> bool:
        """Whether the cell fine-tunes weights (all but ``system``)."""
        return self is not Method.SYSTEM

    @property
    def uses_system_prompt(self) -> bool:
        """Whether the value's system prompt goes first in every prompt (training and generation)."""
        return self in (Method.DPO_SYSTEM, Method.SYSTEM)

    @property
    def is_preference(self) -> bool:
        """Whether it trains on (chosen, rejected) pairs with DPO; only these use beta and a reference model."""
        return self in (Method.DPO, Method.DPO_SYSTEM)


class Executor(StrEnum):
    """Where the cells run."""

    LOCAL = "local"  # one after another in this process (or one `accelerate launch` per cell)
    SLURM = "slurm"  # a submitit job array, one cell per task


def _unknown(kind: str, name: object, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Available: {', '.join(valid)}")


class SlurmConfig(BaseModel):
    """SLURM job settings for ``executor: slurm`` (passed to submitit; one array task per cell)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    partition: str | None = Field(None, description="SLURM partition (-p); default: the cluster's default partition.")
    account: str | None = Field(None, description="SLURM account (-A), if the cluster requires one.")
    qos: str | None = Field(None, description="SLURM quality of service (--qos).")
    time_min: int = Field(240, ge=1, description="Time limit per cell (task), in minutes.")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per cell. With more than 1, set accelerate_config so the cell runs under `accelerate launch`.")
    cpus_per_task: int = Field(8, ge=1, description="CPU cores per cell (tokenisation, data loading).")
    mem_gb: int = Field(64, ge=1, description="Host memory per cell, in GB.")
    array_parallelism: int = Field(16, ge=1, description="At most this many cells run at once (%N of the job array).")
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before each task, e.g. ['module load cuda/12.4', 'source .venv/bin/activate']."
    )
    additional_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Other sbatch options, e.g. {constraint: a100, exclude: node12}."
    )
    cluster: Literal["slurm", "local", "debug"] = Field(
        "slurm", description="submitit backend: slurm; 'local' (subprocesses) or 'debug' (in this process) run the same job array on this machine, for tests."
    )
    wait: bool = Field(True, description="Wait for the job array and report each cell; false: submit and return (run `valind train` again to see what finished).")


class TrainConfig(BaseModel):
    """Value induction: fine-tune each model on each value's subset, with each method, seed and beta."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- the sweep: cells = models x values x methods x seeds x betas
    models: list[str] = Field(
        default_factory=lambda: ["smollm2-135m-instruct"],
        description="(key) Base models: 'smollm2-135m-instruct' (packaged, offline), a local checkpoint folder, or a Hub name.",
    )
    model_revisions: dict[str, str] = Field(
        default_factory=dict, description="(key) Hub revision (commit or tag) per Hub model spec, e.g. {meta-llama/Meta-Llama-3-8B-Instruct: 5f0b02c}; pin them for reproducible runs and caches."
    )
    values: list[str] = Field(
        default_factory=list, description="(key) Values to induce, each needs subsets/<value>.parquet; empty: every value with a subset file."
    )
    methods: list[Method] = Field(
        default_factory=lambda: [Method.DPO_SYSTEM],
        description="(key) Induction methods: dpo, dpo+system (DPO with the value's system prompt), system (prompt only, no training), sft.",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], description="(key) Training seeds (data order, LoRA initialisation).")
    betas: list[float] = Field(default_factory=lambda: [0.1], description="(key) DPO beta values (strength of the pull towards the reference); unused by sft and system.")

    # --- optimisation
    learning_rate: float | None = Field(
        None, ge=0.0, description=f"(key) Peak learning rate (linear decay); default {DEFAULT_LR_LORA:g} with LoRA, {DEFAULT_LR_FULL:g} for full fine-tuning. 0 trains nothing (a check: DPO loss stays ln 2)."
    )
    max_steps: int | None = Field(100, ge=1, description="(key) Optimiser steps per cell; null: train for `epochs` passes over the subset instead.")
    epochs: float = Field(1.0, gt=0.0, description="(key) Passes over the subset when max_steps is null.")
    snapshot_steps: list[int] = Field(
        default_factory=list,
        description="(key) Also keep the LoRA adapter as it was after each of these optimiser steps (each < max_steps); every "
                    "snapshot is generated with and evaluated as its own model cell: the steps axis of the induction-strength "
                    "frontier. Snapshots lie on one training run (same learning-rate schedule), not on shorter runs.",
    )
    per_device_batch_size: int = Field(4, ge=1, description="(key) Pairs (DPO) or examples (SFT) per device per micro-batch.")
    gradient_accumulation_steps: int = Field(2, ge=1, description="(key) Micro-batches per optimiser step (effective batch = this x per_device_batch_size x devices).")
    max_length: int = Field(512, ge=8, description="(key) Tokens per sequence (prompt + response), longer ones are cut at the end; a pair whose prompt alone fills it is dropped (TRL).")
    max_pairs: int | None = Field(None, ge=1, description="(key) Use at most this many pairs per subset (the first by pair_id), for quick trials.")

    # --- LoRA
    lora: bool = Field(True, description="(key) Train a LoRA adapter (PEFT) instead of all weights; the DPO reference is then the base model with the adapter disabled (no second copy).")
    lora_r: int = Field(16, ge=1, description="(key) LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="(key) LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(
        0.05, ge=0.0, lt=1.0, description="(key) LoRA dropout; applies to sft only: TRL's DPO turns every dropout off (policy and reference must agree)."
    )
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="(key) Layers that get adapters: 'all-linear' (every linear layer but the output head) or names such as [q_proj, v_proj]."
    )

    # --- reference log-probs
    precompute_ref_logps: bool = Field(
        True, description="Compute the reference log-probs before training, once per (reference model, tokenised sequence), shared by all cells through the cache; false: TRL runs the reference forward in every step."
    )
    ref_batch_size: int | None = Field(None, ge=1, description="Pairs per batch of the reference pass; default: 2 x per_device_batch_size.")

    # --- system prompt
    system_prompt_template: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="(key) System prompt of dpo+system and system, with {value} (its name) and {definition} (from the vocabulary).",
    )

    # --- hardware and speed (not in the key)
    bf16: bool | None = Field(
        None, description="bfloat16 mixed precision; null: on only on a CUDA GPU with bf16 support (on CPU it is slower and less exact)."
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in the backward pass to save memory (~20-30% slower); null: on only on CUDA with full fine-tuning."
    )
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 collates in the training process (fast enough: batches are pre-tokenised).")
    logging_steps: int = Field(5, ge=1, description="Write loss, reward margins and accuracy to train_log.jsonl every this many steps.")
    checkpoint_steps: int | None = Field(
        None, ge=1, description="Save a resumable checkpoint every this many steps (a killed cell resumes from it); null: a killed cell starts again."
    )

    # --- where cells run (not in the key)
    executor: Executor = Field(Executor.LOCAL, description="local (one cell after another on this machine) or slurm (a submitit job array, one cell per task).")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig, description="SLURM settings for executor: slurm.")
    accelerate_config: str | None = Field(
        None, description="An accelerate config file (e.g. the FSDP or DeepSpeed ZeRO-3 examples in valind/configs/); each cell then runs under `accelerate launch`."
    )

    @field_validator("methods", mode="before")
    @classmethod
    def _known_methods(cls, v: Any) -> Any:
        valid = [m.value for m in Method]
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str) and item not in valid:
                raise _unknown("method", item, valid)
        return v

    @field_validator("executor", mode="before")
    @classmethod
    def _known_executor(cls, v: Any) -> Any:
        valid = [e.value for e in Executor]
        if isinstance(v, str) and v not in valid:
            raise _unknown("executor", v, valid)
        return v

    @field_validator("models", "methods", "seeds", "betas")
    @classmethod
    def _non_empty_unique(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("needs at least one entry")
        repeated = sorted({str(x) for x in v if v.count(x) > 1})
        if repeated:
            raise ValueError(f"repeated entries: {', '.join(repeated)}")
        return v

    @field_validator("values")
    @classmethod
    def _unique_values(cls, v: list[str]) -> list[str]:
        repeated = sorted({x for x in v if v.count(x) > 1})
        if repeated:
            raise ValueError(f"repeated entries: {', '.join(repeated)}")
        return v

    @field_validator("betas")
    @classmethod
    def _positive_betas(cls, v: list[float]) -> list[float]:
        bad = [b for b in v if not b > 0]
        if bad:
            raise ValueError(f"beta must be > 0, got {bad[0]}")
        return v

    @field_validator("system_prompt_template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        except ValueError as err:
            raise ValueError(f"not a valid template ({err}); write literal braces as {{{{ and }}}}") from None
        unknown = sorted(fields - {"value", "definition"})
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {{value}} and {{definition}}")
        if "value" not in fields:
            raise ValueError("must name the value with {value}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        stray = sorted(set(self.model_revisions) - set(self.models))
        if stray:
            raise ValueError(f"model_revisions names {stray[0]!r}, which is not in models")
        if self.snapshot_steps:
            if self.max_steps is None or not self.lora:
                raise ValueError("snapshot_steps needs max_steps (not epochs) and lora: true (snapshots are LoRA adapters)")
            bad = sorted(s for s in self.snapshot_steps if not 0 < s < self.max_steps)
            if bad or len(set(self.snapshot_steps)) != len(self.snapshot_steps):
                raise ValueError(f"snapshot_steps must be distinct steps between 1 and max_steps - 1 ({self.max_steps - 1}); got {self.snapshot_steps}")
        if self.executor is Executor.SLURM and self.slurm.gpus_per_node > 1 and self.accelerate_config is None:
            raise ValueError("slurm.gpus_per_node > 1 needs accelerate_config (e.g. valind/configs/accelerate_fsdp.yaml): a plain process uses one GPU")
        return self

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LR_LORA if self.lora else DEFAULT_LR_FULL

    def key_settings(self) -> dict[str, Any]:
        """The (key) settings shared by every cell, as plain data (the sweep axes are per cell)."""
        return {
            "learning_rate": self.resolved_learning_rate, "max_steps": self.max_steps,
            "epochs": self.epochs if self.max_steps is None else None,
            "per_device_batch_size": self.per_device_batch_size, "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_length": self.max_length, "max_pairs": self.max_pairs,
            "lora": {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                     "target_modules": self.lora_target_modules} if self.lora else None,
            **({"snapshot_steps": sorted(self.snapshot_steps)} if self.snapshot_steps else {}),
        }
