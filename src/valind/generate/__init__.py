"""The generate stage: answers of every model cell (base models and finished training cells) to fixed prompt suites.

Public API:

- ``GenerateConfig`` (``valind.generate.config``): the ``generate`` section of the run config
  (backend hf / vllm / openai, suites and their external sources, decoding, batching).
- ``run_generate(config: Config, ws: Workspace, progress: Progress | None = None, *, backend: Backend | None = None)
  -> GenerateResult``: writes ``generate/<cell label>/<suite>.parquet`` for every cell and suite that is not done,
  through the shared model-call cache; skips finished files; ``result.files`` says per file how
  many answers came from the cache, were generated or failed; ``result.not_finished`` lists the
  training cells left out because they are not finished; ``result.summary()`` the totals.
  ``backend`` replaces the configured one (tests, custom engines).
- ``load_suite(name: str, config: GenerateConfig, ws: Workspace | None = None) -> list[SuitePrompt]``:
  the prompts of ``value_elicitation``, ``unsafe`` or ``safe_sensitive`` (``ws`` for held-out prompts).
- ``model_cells(config: Config, ws: Workspace) -> list[ModelCell]``: the cells to generate with.

Modules, in reading order: config (settings), base (requests, answers, identity, the Generator and
Backend protocols, the fake), suites (prompt sets), cells (which models), hf / vllm_backend /
openai_backend (the backends), stage (the stage).

``GenerateConfig`` imports only pydantic; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from valind.generate.config import (
    BackendName,
    GenerateConfig,
    PromptSource,
    SuiteSources,
)

if TYPE_CHECKING:
    from valind.generate.cells import CellKind, ModelCell, model_cells
    from valind.generate.stage import GenerateResult, run_generate
    from valind.generate.suites import SuitePrompt, load_suite

__all__ = [
    "BackendName", "CellKind", "GenerateConfig", "GenerateResult", "ModelCell", "PromptSource", "SuitePrompt", "SuiteSources",
    "load_suite", "model_cells", "run_generate",
]

_LAZY = {"CellKind": "valind.generate.cells", "ModelCell": "valind.generate.cells", "model_cells": "valind.generate.cells",
         "GenerateResult": "valind.generate.stage", "run_generate": "valind.generate.stage",
         "SuitePrompt": "valind.generate.suites", "load_suite": "valind.generate.suites"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'valind.generate' has no attribute {name!r}")
