"""Settings of the generate stage: which backend answers, which prompt suites, and how to decode.

Mounted as ``Config.generate``. Settings marked (key) change the generated text and are part of
the cache key of every answer (see ``valind.generate.base``); the others (batch size,
concurrency, timeouts, retries, GPU memory) do not. This module imports only pydantic.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SUITE_NAMES = ("value_elicitation", "unsafe", "safe_sensitive")
DEFAULT_BATCH_SIZE = {"hf": 16, "vllm": 512, "openai": 64, "fake": 16}  # requests per batch when batch_size is unset


class BackendName(StrEnum):
    """Which engine writes the answers."""

    HF = "hf"  # transformers on CPU or one GPU: batched, left-padded generate(); LoRA through PEFT
    VLLM = "vllm"  # vLLM offline batches on GPUs; LoRA through LoRARequest
    OPENAI = "openai"  # any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, TGI)
    FAKE = "fake"  # deterministic text without a model, for tests


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptSource(_Strict):
    """Where an external prompt set is read from: a local file or a Hugging Face Hub dataset.

    A plain string in YAML is taken as ``path`` (``advbench: walledai/AdvBench``).
    """

    path: str = Field(
        description="Local file (.csv, .jsonl, .json, .parquet, optionally .gz), dataset folder, or Hub dataset name."
    )
    split: str = Field("train", description="(key) Split of a Hub dataset or dataset folder (PKU-SafeRLHF: 'test' or 'train').")
    subset: str | None = Field(None, description="(key) Hub dataset configuration name, if it has several.")
    revision: str | None = Field(None, description="(key) Hub dataset revision; pin it for reproducible runs.")
    limit: int | None = Field(None, ge=1, description="(key) Read at most this many records of the source.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class SuiteSources(_Strict):
    """External prompt sets added to the project's own suites; each is optional (null: not used).

    - ``advbench`` -> ``unsafe``: the ``goal`` column (local CSV such as
      ``../shared/data/advbench/harmful_behaviors.csv``) or ``prompt`` (Hub ``walledai/AdvBench``).
    - ``xstest`` -> rows with ``label == unsafe`` to ``unsafe``, ``label == safe`` to ``safe_sensitive``
      (``../shared/data/xstest/xstest_prompts.csv`` or Hub ``Paul/XSTest``).
    - ``harmbench`` -> ``unsafe``: a HarmBench behaviours CSV (``Behavior``; ``ContextString`` is put
      before the behaviour as HarmBench does).
    - ``pku`` -> ``unsafe``: PKU-SafeRLHF's ``prompt`` column (Hub ``PKU-Alignment/PKU-SafeRLHF``, split
      ``test``, or a file); where the safety columns exist, only prompts with at least one unsafe response.
    """

    advbench: PromptSource | None = Field(None, description="(key) AdvBench harmful behaviours, for the unsafe suite.")
    xstest: PromptSource | None = Field(None, description="(key) XSTest prompts: unsafe ones for unsafe, safe ones for safe_sensitive.")
    harmbench: PromptSource | None = Field(None, description="(key) HarmBench behaviours CSV, for the unsafe suite.")
    pku: PromptSource | None = Field(None, description="(key) PKU-SafeRLHF prompts, for the unsafe suite.")


class GenerateConfig(_Strict):
    """Answers of every model cell (base models, trained cells) to fixed prompt suites."""

    # --- backend
    backend: BackendName = Field(BackendName.HF, description="(key) Engine: hf (default, CPU or one GPU), vllm (GPU), openai (any compatible server), fake (tests).")
    base_url: str | None = Field(None, description="openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: name of the environment variable holding the API key (the key itself never goes in a config).")
    model_names: dict[str, str] = Field(
        default_factory=dict,
        description="openai: the name the server serves a cell under, by cell label (see `valind.generate.cells`); "
        "default: the model spec for base cells, the cell label for trained cells (e.g. vLLM's --lora-modules LABEL=ADAPTER_DIR).",
    )
    concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds per request before it counts as timed out.")
    request_retries: int = Field(5, ge=0, description="openai: retries with back-off on 429, 5xx, timeouts and dropped connections.")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per model.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vllm: fraction of GPU memory to use.")

    # --- what to answer
    suites: list[str] = Field(
        default_factory=lambda: list(SUITE_NAMES),
        description="Prompt suites: value_elicitation (prompts inviting each of the 15 values), unsafe (refusal), safe_sensitive (over-refusal).",
    )
    sources: SuiteSources = Field(default_factory=SuiteSources, description="(key) External prompt sets added to the suites (AdvBench, XSTest, HarmBench, PKU-SafeRLHF).")
    suite_files: dict[str, str] = Field(
        default_factory=dict, description="(key) Replace the project's own prompt file of a suite (JSONL: id, prompt, and the suite's fields), by suite name."
    )
    heldout_per_value: int = Field(
        0, ge=0, description="(key) value_elicitation: also this many prompts per value from the held-out splits (subsets/<value>.heldout.parquet); 0: none."
    )
    max_prompts_per_suite: int | None = Field(
        None, ge=1, description="(key) Use at most this many prompts per suite (a stable sample by prompt id; a larger N keeps the smaller sample), for small runs."
    )
    include_base: bool = Field(True, description="Generate with the un-induced base model of every train.models entry too (the reference of every comparison).")

    # --- decoding
    max_new_tokens: int = Field(128, ge=1, description="(key) Answer length limit in tokens.")
    temperature: float = Field(0.0, ge=0.0, description="(key) 0 is greedy (one deterministic answer); above 0 samples.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="(key) Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (sampling only).")
    n_samples: int = Field(1, ge=1, description="(key) Answers per prompt; more than 1 needs temperature > 0.")
    seed: int = Field(0, ge=0, description="(key) Sampling: each answer's seed derives from this, the prompt and the sample index (the same in every cell).")

    # --- running
    batch_size: int | None = Field(
        None, ge=1, description="Requests per batch, and per cache write (a killed run loses at most one batch); default hf 16, vllm 512, openai 64."
    )
    max_failure_fraction: float = Field(0.05, ge=0.0, le=1.0, description="Stop the stage when more than this fraction of one file's answers fails.")

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, v: str) -> str:
        from valind.credentials import check_key_env_name

        return check_key_env_name(v)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        from valind.credentials import check_base_url

        return check_base_url(v)

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in SUITE_NAMES:
                close = difflib.get_close_matches(name, SUITE_NAMES, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown suite {name!r}.{hint} Available: {', '.join(SUITE_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError("a suite is listed twice")
        return v

    @field_validator("suite_files")
    @classmethod
    def _known_suite_files(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [name for name in v if name not in SUITE_NAMES]
        if bad:
            raise ValueError(f"unknown suite {bad[0]!r}; available: {', '.join(SUITE_NAMES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GenerateConfig:
        if self.n_samples > 1 and self.temperature == 0:
            raise ValueError("n_samples > 1 needs temperature > 0: greedy decoding gives the same answer every time")
        return self

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE[self.backend.value]
