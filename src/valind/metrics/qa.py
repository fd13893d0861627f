"""QA capability through lm-evaluation-harness: standard tasks by name, shipped tasks over local files.

``run_qa(model, tasks, ...)`` wraps ``lm_eval.simple_evaluate(model="hf", ...)``: the Hugging Face
backend loads the model (a local checkpoint folder, a Hub name, or the packaged
``"smollm2-135m-instruct"``, resolved through ``valind.models.resolve_model``), optionally with a
PEFT adapter on top (``peft_adapter``: a LoRA folder written by the train stage), in ``dtype``
(float32 by default) on ``device``.

Tasks:

- standard lm-eval tasks by name, e.g. ``mmlu`` (57 subjects, 5-shot in the literature; a group
  task: one row per group plus its subtasks), ``arc_challenge``, ``truthfulqa_mc2``, ``gsm8k``
  (generation, exact match on the final number). Their data come from the Hugging Face Hub: they
  need network on first use (or a filled ``datasets`` cache and ``HF_DATASETS_OFFLINE=1``);
- tasks shipped in ``valind/data/lm_eval_tasks/`` over local files (``LOCAL_TASKS``), which never
  touch the Hub: the ``datasets`` ``csv`` builder reads the file given at run time in
  ``data_files={task: path}``. ``truthfulqa_local_mc`` (mc1 style: Best Answer against the Incorrect
  Answers; ``acc``, ``acc_norm``) and ``truthfulqa_local_mc2`` (mc2 style: probability mass on the
  Correct Answers) over the published ``TruthfulQA.csv``. For each one, ``run_qa`` writes a small
  YAML into a temporary include folder that ``include:``s the shipped file and sets its
  ``dataset_kwargs.data_files`` (and the ``datasets`` cache folder, ``<cache_dir>/lm_eval_datasets``);
- your own task YAMLs: ``include_path`` (a folder, or several), passed to lm-eval's ``TaskManager``.

An unknown task name raises ``ConfigError`` with the closest names lm-eval knows.

Scoring is lm-eval's own. For a multiple-choice task each choice is scored by the summed
log-likelihood of ``" " + choice`` after the prompt; ``acc`` = 1 when the highest-scoring choice is
the target, ``acc_norm`` the same with each score divided by the choice's length in characters;
the task value is the mean over documents and ``stderr`` the standard error of that mean,
``std(ddof=1) / sqrt(n)`` (metrics that are not means get a bootstrap stderr, ``bootstrap_iters``).

Returned dict (JSON-serialisable)::

    {"lm_eval_version": "0.4.13",
     "model": {"pretrained": "/cache/models/smollm2-...", "peft": None, "dtype": "float32",
               "revision": None, "identity": {...}},
     "settings": {"tasks": ["truthfulqa_local_mc"], "limit": 20, "num_fewshot": None,
                  "batch_size": 8, "device": "cpu", "seed": 0},
     "results": [{"task": "truthfulqa_local_mc", "metric": "acc", "filter": "none", "value": 0.35,
                  "stderr": 0.109, "n": 20, "n_available": 817, "is_group": False,
                  "higher_is_better": True, "task_version": 1.0, "config_hash": "9c1e...",
                  "data_files": {"test": {"path": "/data/TruthfulQA.csv", "sha256": "..."}}}, ...],
     "samples": {"truthfulqa_local_mc": "/out/samples/truthfulqa_local_mc.jsonl"}}

``config_hash``: blake2b-128 of the task config lm-eval ran (its YAML after ``include:``, with
functions as source text), with run-specific parts replaced: data file paths by their sha256, the
``datasets`` cache folder and the temporary YAML path dropped. Two runs with the same hash ran the
same task on the same data. ``n``: documents evaluated (``limit`` caps it: the first ``limit``
documents in file order); ``n_available``: documents in the task.

Measured on a 2-core CPU shared with other jobs (lm-eval 0.4.13): importing lm-eval, torch and
transformers ~10 s; indexing lm-eval's ~14,700 built-in task configs ~5 s (skipped when every
requested task is local); the tiny test model on 5 questions ~4 s of forward passes. Each choice is
one forward pass over primer + question + answer (~200 tokens): the first 20 TruthfulQA questions
are 105 mc choices (174 mc2), which took SmolLM2-135M (float32) about 3-4 minutes. On a GPU use
``device="cuda", dtype="bfloat16", batch_size="auto"``.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from valind.errors import ConfigError
from valind.models import ModelRef, resolve_model
from valind.workspace import atomic_path, hash_json

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks"
STANDARD_TASKS = {  # documented examples; any name lm-eval knows works
    "mmlu": "57-subject multiple choice (group task); Hub dataset cais/mmlu",
    "arc_challenge": "ARC challenge set, multiple choice; Hub dataset allenai/ai2_arc",
    "truthfulqa_mc2": "TruthfulQA mc2 (probability mass on true answers); Hub dataset truthfulqa/truthful_qa",
    "gsm8k": "grade-school maths, generation + exact match; Hub dataset openai/gsm8k",
}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # "<function f at 0x7f..>" differs per process
_NOT_METRICS = {"alias", "name", "sample_len", " "}


class _FunctionTag(str):
    """A ``!function`` scalar in a task YAML, kept as text (we only read the ``task:`` name)."""


class _TaskLoader(yaml.SafeLoader):
    pass


_TaskLoader.add_constructor("!function", lambda loader, node: _FunctionTag(loader.construct_scalar(node)))


def local_tasks() -> dict[str, Path]:
    """The tasks shipped with valind that read local files: task name -> its YAML file."""
    found = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            found[cfg["task"]] = path
    return found


def run_qa(
    model: str | Path | ModelRef,
    tasks: Sequence[str],
    *,
    peft_adapter: str | Path | None = None,
    limit: int | None = None,
    batch_size: int | str = 8,
    device: str = "cpu",
    dtype: str = "float32",
    include_path: str | Path | Sequence[str | Path] | None = None,
    num_fewshot: int | None = None,
    data_files: Mapping[str, str | Path] | None = None,
    samples_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    seed: int = 0,
    bootstrap_iters: int = 100_000,
) -> dict[str, Any]:
    """Evaluate ``model`` on lm-eval ``tasks`` and return metrics per task (shape in the module doc).

    ``model``: a checkpoint folder, a Hub name, ``"smollm2-135m-instruct"`` or a ``ModelRef``.
    ``peft_adapter``: a PEFT adapter folder (or Hub name) loaded on top of the model.
    ``limit``: evaluate only the first ``limit`` documents of each task (None: all).
    ``batch_size``: documents per forward batch, or ``"auto"``. ``device``: ``"cpu"``, ``"cuda"``,
    ``"cuda:0"``... ``dtype``: torch dtype name for the weights (``"float32"``, ``"bfloat16"``, ``"auto"``).
    ``include_path``: folder(s) of your own task YAMLs. ``num_fewshot``: override the tasks'
    few-shot count (None: each task's default). ``data_files``: the file each shipped local task
    reads, e.g. ``{"truthfulqa_local_mc": "data/TruthfulQA.csv"}``; required for every local task
    requested. ``samples_dir``: write lm-eval's per-document outputs there as ``<task>.jsonl``
    (None: not kept). ``cache_dir``: valind cache (the packaged model's checkpoint; the ``datasets``
    copy of local files under ``lm_eval_datasets/``); default ``$VALIND_CACHE`` or ``~/.cache/valind``.
    ``revision``: Hub revision of ``model``. ``seed``: lm-eval's python / numpy / torch / few-shot seeds.
    """
    try:
        import lm_eval
    except ImportError:
        raise ConfigError("QA needs lm-evaluation-harness: pip install 'lm-eval==0.4.13'") from None

    from valind.embedding import default_cache_dir

    tasks = list(tasks)
    if not tasks:
        raise ConfigError("run_qa needs at least one task name")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of documents, got {limit}")
    files = _data_files(tasks, data_files or {})
    user_paths = _as_paths(include_path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    ref = _model_ref(model, cache, revision)

    with tempfile.TemporaryDirectory(prefix="valind-lm-eval-tasks-") as tmp:
        _write_local_overrides(Path(tmp), files, cache / "lm_eval_datasets")
        manager = _task_manager(tasks, [Path(tmp), *user_paths])
        model_args: dict[str, Any] = {"pretrained": ref.path_or_name, "dtype": dtype}
        if ref.revision is not None:
            model_args["revision"] = ref.revision
        if peft_adapter is not None:
            model_args["peft"] = str(peft_adapter)
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=tasks,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            device=device,
            limit=limit,
            bootstrap_iters=bootstrap_iters,
            log_samples=samples_dir is not None,
            task_manager=manager,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if out is None:  # only on non-zero ranks of a multi-process run
        raise ConfigError("lm-eval returned no results (run_qa runs in one process; do not launch it with accelerate)")

    hashed = {name: _data_hashes(paths) for name, paths in files.items()}
    samples = _write_samples(out["samples"], Path(samples_dir)) if samples_dir is not None else {}
    return {
        "lm_eval_version": version("lm_eval"),
        "model": {
            "pretrained": ref.path_or_name,
            "peft": str(peft_adapter) if peft_adapter is not None else None,
            "dtype": dtype,
            "revision": ref.revision,
            "identity": ref.identity,
        },
        "settings": {
            "tasks": tasks, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size,
            "device": device, "seed": seed,
        },
        "results": _result_rows(out, hashed),
        "samples": samples,
    }


# ---------------------------------------------------------------- inputs


def _model_ref(model: str | Path | ModelRef, cache: Path, revision: str | None) -> ModelRef:
    if isinstance(model, ModelRef):
        if revision is not None and revision != model.revision:
            raise ConfigError(f"revision {revision!r} given with a ModelRef of revision {model.revision!r}")
        return model
    return resolve_model(str(model), cache, revision)


def _as_paths(include_path: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if include_path is None:
        return []
    items = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    paths = [Path(p).expanduser().resolve() for p in items]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"include_path not found: {', '.join(missing)}")
    return paths


def _data_files(tasks: list[str], given: Mapping[str, str | Path]) -> dict[str, dict[str, Path]]:
    """Split -> resolved file for every requested shipped local task (all splits read the file given)."""
    shipped = local_tasks()
    unknown = sorted(set(given) - set(shipped))
    if unknown:
        raise ConfigError(f"data_files given for {', '.join(unknown)}, which are not shipped local tasks; these are: {', '.join(shipped)}")
    files: dict[str, dict[str, Path]] = {}
    for task in tasks:
        if task not in shipped:
            continue
        if task not in given:
            raise ConfigError(f"task {task!r} reads a local file: pass data_files={{{task!r}: 'path/to/file.csv'}}")
        path = Path(given[task]).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"task {task!r}: data file not found: {path}")
        cfg = yaml.load(shipped[task].read_text(encoding="utf-8"), Loader=_TaskLoader)
        splits = (cfg.get("dataset_kwargs") or {}).get("data_files") or {"test": None}
        files[task] = {split: path for split in splits}
    return files


def _write_local_overrides(folder: Path, files: dict[str, dict[str, Path]], datasets_cache: Path) -> None:
    """One YAML per local task: ``include:`` the shipped file, point ``data_files`` at the given file."""
    shipped = local_tasks()
    for task, splits in files.items():
        override = {
            "include": str(shipped[task]),
            "task": task,
            "dataset_kwargs": {"data_files": {s: str(p) for s, p in splits.items()}, "cache_dir": str(datasets_cache)},
        }
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(override, sort_keys=False), encoding="utf-8")


def _task_manager(tasks: list[str], paths: list[Path]) -> TaskManager:
    """lm-eval's TaskManager over our include folders; lm-eval's own ~14,700 configs are indexed
    (~5 s) only when a requested task is not found in them."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    if all(t in manager.all_tasks for t in tasks):
        return manager
    manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=True)
    known = manager.all_tasks
    missing = [t for t in tasks if t not in known]
    if missing:
        hints = []
        for t in missing:
            close = difflib.get_close_matches(t, known, n=5, cutoff=0.6)
            hints.append(f"{t!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(
            f"unknown lm-eval task {', '.join(hints)}; shipped local tasks: {', '.join(local_tasks())}; "
            f"standard ones include {', '.join(STANDARD_TASKS)} (`lm-eval ls tasks` lists all {len(known)})"
        )
    return manager


# ---------------------------------------------------------------- outputs


def _data_hashes(splits: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {s: {"path": str(p), "sha256": _sha256(p)} for s, p in splits.items()}


def _config_hash(config: dict[str, Any], data: dict[str, dict[str, str]] | None) -> str:
    """Hash of a task config with run-specific parts replaced (see the module doc)."""
    cfg = orjson.loads(orjson.dumps(config, default=str))
    cfg = _strip_addresses(cfg)
    kwargs = cfg.get("dataset_kwargs") or {}
    kwargs.pop("cache_dir", None)
    if data is not None and "data_files" in kwargs:
        kwargs["data_files"] = {s: d["sha256"] for s, d in data.items()}
    (cfg.get("metadata") or {}).pop("config_source", None)
    return hash_json(cfg)


def _strip_addresses(obj: Any) -> Any:
    if isinstance(obj, str):
        return _ADDRESS.sub(">", obj)
    if isinstance(obj, dict):
        return {k: _strip_addresses(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_addresses(v) for v in obj]
    return obj


def _result_rows(out: dict[str, Any], data: dict[str, dict[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """One row per (task, metric, filter) from lm-eval's ``results``."""
    groups = {g for g, subtasks in (out.get("group_subtasks") or {}).items() if subtasks}
    rows = []
    for task, metrics in out["results"].items():
        counts = out.get("n-samples", {}).get(task, {})
        config = out.get("configs", {}).get(task)
        for key, value in metrics.items():
            if key in _NOT_METRICS or "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "task": task,
                "metric": metric,
                "filter": filt,
                "value": _number(value),
                "stderr": _number(stderr),
                "n": counts.get("effective", metrics.get("sample_len")),
                "n_available": counts.get("original"),
                "is_group": task in groups,
                "higher_is_better": (out.get("higher_is_better", {}).get(task) or {}).get(metric),
                "task_version": out.get("versions", {}).get(task),
                "config_hash": _config_hash(config, data.get(task)) if config is not None else None,
                "data_files": data.get(task),
            })
    return rows


def _number(x: Any) -> float | None:
    """lm-eval reports a missing stderr as the string "N/A"."""
    return float(x) if isinstance(x, (int, float)) else None


def _write_samples(samples: dict[str, list[dict[str, Any]]], folder: Path) -> dict[str, str]:
    written = {}
    for task, records in samples.items():
        path = folder / f"{task}.jsonl"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            for rec in records:
                f.write(orjson.dumps(rec, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
                f.write(b"\n")
        written[task] = str(path)
    return written


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
