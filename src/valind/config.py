"""Typed configuration: defaults and help text in one place, validated once.

A config is loaded from YAML (``load_config``), CLI overrides of the form
``section.field=value`` are applied on top (``apply_overrides``), and the resolved
config is written into the workspace manifest. Relative paths in a YAML file are
relative to that file's folder; paths given on the command line are relative to the
current directory, as in any shell command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from valind.credentials import check_base_url, check_key_env_name, hides_value
from valind.errors import ConfigError
from valind.generate.config import GenerateConfig
from valind.train.config import TrainConfig

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIGS_DIR = PACKAGE_DIR / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """One preference data source to ingest."""

    path: str = Field(
        description="Local file (.jsonl, .json, .parquet, .csv, optionally .gz), a local dataset "
        "folder, or a Hugging Face Hub dataset name such as 'Anthropic/hh-rlhf'."
    )
    adapter: str = Field(
        "auto",
        description="Dataset adapter: hh_rlhf, pku_saferlhf, ultrafeedback, ultrafeedback_raw, "
        "helpsteer2, helpsteer2_regular, generic; 'auto' picks one from the first record's fields.",
    )
    name: str | None = Field(
        None, description="Name of the source in the workspace (ingest/<name>.parquet); default: the adapter name."
    )
    split: str = Field("train", description="Split to load from a Hub dataset or dataset folder.")
    subset: str | None = Field(None, description="Hub dataset configuration name, if it has several.")
    data_dir: str | None = Field(None, description="Folder inside a Hub dataset, e.g. 'harmless-base' or 'preference'.")
    revision: str | None = Field(None, description="Hub dataset revision (commit or tag); pin it for reproducible runs.")
    limit: int | None = Field(None, ge=1, description="Read at most this many records (for quick trials).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Adapter options, e.g. {preference: safer} for pku_saferlhf."
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_file_stem(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "/\\:") or v.startswith(".")):
            raise ValueError("must be a plain name usable as a file name (no '/', '\\', ':' or leading '.')")
        return v


class IngestConfig(_Strict):
    """How preference data is read into the canonical pair table."""

    sources: list[SourceConfig] = Field(default_factory=list, description="The data sources, ingested in this order.")
    strict: bool = Field(
        False, description="Stop at the first bad record with an error naming file, row and field "
        "(default: skip it and count it by reason in ingest/ingest_report.json)."
    )
    max_reject_fraction: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Fail a source when more than this fraction of its records is rejected (duplicates excluded).",
    )
    max_text_chars: int = Field(
        100_000, ge=1, description="Reject a pair whose prompt, chosen or rejected text is longer than this (characters)."
    )
    row_group_size: int = Field(65_536, ge=1, description="Pairs per Parquet row group (memory bound while writing).")

    @model_validator(mode="after")
    def _unique_names(self) -> IngestConfig:
        from valind.ingest.adapters import source_name

        names = [source_name(s) for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)} (set 'name' on each source)")
        return self


class ExtractConfig(_Strict):
    """Which values each response expresses: the extractor backend and its settings.

    Settings marked (key) change the output and are part of the cache key; the others
    (batch size, concurrency, timeouts, retries of failed calls) do not.
    """

    extractor: str = Field("embedded", description="Backend: embedded (offline default), hf, vllm, openai, fake.")
    vocabulary: str | None = Field(
        None, description="(key) Value vocabulary: a YAML file, a taxonomy folder or values_tree.csv; default: the 15 values shipped."
    )
    taxonomy_level: int = Field(1, ge=1, le=2, description="(key) With a taxonomy: level-1 (266) or level-2 (26) clusters as values.")
    model: str | None = Field(
        None, description="(key) hf / vllm / openai: model name, local path, or 'smollm2-135m-instruct' (the packaged model)."
    )
    revision: str | None = Field(None, description="(key) Model revision for Hub models.")
    mode: str = Field("closed", description="(key) LLM backends: 'closed' (answers restricted to the vocabulary) or 'open' (free text, then mapped).")
    with_prompt: bool = Field(True, description="(key) LLM backends: show the conversation before the response.")
    max_new_tokens: int = Field(96, ge=8, description="(key) LLM backends: answer length limit in tokens.")
    temperature: float = Field(0.0, ge=0.0, description="(key) LLM backends: 0 is greedy.")
    seed: int = Field(0, description="(key) Sampling seed (only used when temperature > 0).")
    map_threshold: float = Field(0.6, ge=0.0, le=1.0, description="(key) Open mode: minimum cosine similarity to map a free-text value.")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="(key) embedded: score at or above which a value counts; default: per-value thresholds fitted by cross-validation."
    )
    labels: str | None = Field(
        None, description="(key) embedded: labelled responses (JSONL: response, values) to fit its classifier; default: the set shipped."
    )
    max_retries: int = Field(2, ge=0, description="LLM backends: asks again after an answer that does not parse.")
    batch_size: int = Field(32, ge=1, description="Items per model batch (and per cache write).")
    max_failure_fraction: float = Field(0.05, ge=0.0, le=1.0, description="Fail the stage when more than this fraction of responses fails.")
    base_url: str | None = Field(None, description="openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: name of the environment variable holding the API key (the key itself never goes in a config).")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds per request before it counts as timed out.")
    request_retries: int = Field(5, ge=0, description="openai: retries with back-off on 429, 5xx, timeouts and dropped connections.")
    json_schema: bool = Field(True, description="openai: send response_format with a JSON schema (turn off for servers without support).")
    schema_format: str = Field(
        "json_schema", description="openai: how response_format carries the schema: json_schema (OpenAI, vLLM, SGLang, "
        "llama.cpp llama-server, TGI) or json_object (llama-cpp-python's server)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per model.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vllm: fraction of GPU memory to use.")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("closed", "open"):
            raise ValueError("must be 'closed' or 'open'")
        return v

    @field_validator("schema_format")
    @classmethod
    def _schema_format(cls, v: str) -> str:
        if v not in ("json_schema", "json_object"):
            raise ValueError("must be 'json_schema' or 'json_object'")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, v: str) -> str:
        return check_key_env_name(v)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        return check_base_url(v)


class SubsetsConfig(_Strict):
    """Which values get a DPO training set, and how the sets are cut (see valind.subsets)."""

    min_pairs: int = Field(500, ge=1, description="Keep a value only with at least this many pairs in its subset (the study: 500).")
    valences: list[str] = Field(
        default_factory=lambda: ["positive", "negative", "neutral"], description="Keep values of these valences."
    )
    categories: list[str] = Field(
        default_factory=lambda: ["Practical", "Epistemic", "Social", "Protective", "Personal"],
        description="Keep values of these taxonomy categories (the study kept Social, Protective, Personal).",
    )
    include: list[str] = Field(default_factory=list, description="Only these values (empty: all that pass the other criteria).")
    exclude: list[str] = Field(default_factory=list, description="Never these values.")
    heldout_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of prompts held out per value (no prompt in both splits); 0 writes no held-out split."
    )
    seed: int = Field(0, description="Seed of the held-out split.")

    @field_validator("valences")
    @classmethod
    def _valences(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in ("positive", "negative", "neutral")]
        if bad:
            raise ValueError(f"unknown valence {bad[0]!r}; allowed: positive, negative, neutral")
        return v


class EvaluateConfig(_Strict):
    """How generations are judged and compared with the un-induced model (see valind.evaluate)."""

    refusal_judge: str = Field("rules", description="Refusal judge: rules (offline default), llm (uses the extract backend settings), fake.")
    anthro_judge: str = Field("rules", description="Anthropomorphic / validating judge: rules, llm, fake.")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Significance level for Benjamini-Hochberg adjusted p-values.")
    fdr_scope: str = Field("matrix", description="Benjamini-Hochberg family: 'matrix' (every crosstalk cell) or 'row' (per induced model).")
    n_boot: int = Field(2000, ge=100, description="Paired bootstrap replicates for the confidence interval of each change.")
    seed: int = Field(0, description="Seed of the bootstrap and permutation draws.")
    qa_tasks: list[str] = Field(
        default_factory=lambda: ["truthfulqa_local_mc"],
        description="lm-evaluation-harness tasks (standard names such as mmlu, arc_challenge need the Hub; "
        "truthfulqa_local_mc reads qa_data). Empty: no QA.",
    )
    qa_data: str | None = Field(
        None, description="TruthfulQA.csv for truthfulqa_local_mc; default ../shared/data/truthfulqa/TruthfulQA.csv beside the project if present."
    )
    qa_limit: int | None = Field(100, ge=1, description="Questions per QA task (None: all).")
    qa_snapshots: bool = Field(
        False, description="Also run QA on the snapshot cells of the frontier sweep (train.snapshot_steps); each is a full QA run."
    )
    qa_num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per QA question (None: each task's default).")

    @field_validator("fdr_scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if v not in ("matrix", "row"):
            raise ValueError("must be 'matrix' or 'row'")
        return v


class Config(_Strict):
    """The whole run configuration."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingest stage settings.")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="Extract stage settings.")
    subsets: SubsetsConfig = Field(default_factory=SubsetsConfig, description="Value subset selection.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Value induction training sweep.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Answers of every model to the prompt suites.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Judging and comparing the answers.")
    cache_dir: str | None = Field(
        None, description="Model-call cache and converted checkpoints; default $VALIND_CACHE or ~/.cache/valind."
    )

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("VALIND_CACHE")
        return Path(env).expanduser() if env else Path.home() / ".cache" / "valind"  # as valind.embedding


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        # never echo what may be an API key put in the wrong place (valind.credentials)
        hidden = e["type"] == "extra_forbidden" or hides_value(str(e["loc"][-1]) if e["loc"] else "")
        shown = "" if hidden or isinstance(got, (dict, list)) else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and hides_value(str(e["loc"][-1])):
            msg += "; API keys never go in a config: export the key in the environment variable named by api_key_env"
        lines.append(f"  {field}: {msg}{shown}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any], origin: str = "config") -> Config:
    """Build a Config from plain data, turning pydantic errors into one ConfigError naming each field."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Make every relative file path of a YAML config relative to the file's folder (when that file exists)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).expanduser().is_absolute() and (base / value).exists():
            return str((base / value).resolve())
        return value

    def section(name: str) -> dict[str, Any]:
        sec = data.get(name)
        return sec if isinstance(sec, dict) else {}

    for src in section("ingest").get("sources") or []:
        if isinstance(src, dict):
            src["path"] = resolve(src.get("path"))
    for key in ("vocabulary", "labels"):
        if key in section("extract"):
            section("extract")[key] = resolve(section("extract")[key])
    if "qa_data" in section("evaluate"):
        section("evaluate")["qa_data"] = resolve(section("evaluate")["qa_data"])
    generate = section("generate")
    files = generate.get("suite_files")
    if isinstance(files, dict):
        generate["suite_files"] = {k: resolve(v) for k, v in files.items()}
    sources = generate.get("sources")
    if isinstance(sources, dict):
        for name, src in sources.items():
            if isinstance(src, dict):
                src["path"] = resolve(src.get("path"))
            else:
                sources[name] = resolve(src)


def load_config_data(path: str | Path) -> dict[str, Any]:
    """Read a YAML config into plain data, with relative paths resolved against the file's folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    _resolve_relative_paths(data, p.resolve().parent)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML: ``true``, ``3``, ``[a, b]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:  # the text is not echoed: it may be a key given by mistake
            raise ConfigError("an override must look like section.field=value (one has no '=' or no field name)")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config; ``path=None`` starts from the defaults."""
    data = load_config_data(path) if path else {}
    apply_overrides(data, overrides or [])
    return validate_config(data, origin=str(path) if path else "defaults")


def demo_config_path() -> Path:
    return CONFIGS_DIR / "demo.yaml"
