"""The ``vllm`` backend: offline ``vllm.LLM`` batches on GPUs; LoRA adapters through ``LoRARequest``.

One engine per base model, reused by every cell of that base: the base cell, the ``system``
cells (the same weights, another system prompt) and the LoRA adapter cells, each batch sent with
its cell's ``LoRARequest`` (the engine is built with ``enable_lora`` and a ``max_lora_rank`` that
fits the largest adapter rank of that base). A fully fine-tuned checkpoint gets its own engine.
Only one engine lives at a time; the stage orders cells by base model, so each is built once.

``LLM.chat`` renders each conversation with the model's chat template, as the ``hf`` backend
does. Decoding is the config's, not the model's ``generation_config`` defaults (an explicit
``SamplingParams`` per request: greedy, or temperature / top_p with the request's own seed, so an
answer does not depend on its batch). If a batch raises (a prompt longer than the context, say),
its requests are sent again one at a time so only the bad ones fail.

Needs a CUDA GPU and ``pip install vllm``; the package is imported only when this backend is built.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from valind.errors import ConfigError
from valind.extract.llm import CallFailed
from valind.generate.base import Completion, Decoding, GenerationRequest
from valind.generate.cells import CellKind, ModelCell, artifact_fingerprint
from valind.generate.config import GenerateConfig
from valind.models import ModelRef, resolve_model
from valind.workspace import read_json

log = logging.getLogger(__name__)

NEEDS = "the vllm generation backend needs a CUDA GPU and `pip install vllm`"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


class VLLMGenerator:
    name: ClassVar[str] = "vllm"

    def __init__(self, llm: Any, lora_request: Any, decoding: Decoding, identity: dict[str, Any]) -> None:
        self.llm = llm  # a vllm.LLM
        self.lora_request = lora_request  # a vllm LoRARequest, or None
        self.decoding = decoding
        self._identity = identity

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion | CallFailed]:
        if not requests:
            return []
        try:
            outputs = self.llm.chat([r.messages for r in requests], [self._params(r) for r in requests],
                                    lora_request=self.lora_request, use_tqdm=False)
            return [_completion(out) for out in outputs]
        except Exception as err:  # vLLM's error types vary by version; every one is recorded per request below
            if len(requests) == 1:
                log.warning("vllm: a request failed", exc_info=True)
                return [CallFailed(f"{type(err).__name__}: {err}")]
            log.warning("vllm: a batch of %d failed (%s: %s); sending it one at a time", len(requests), type(err).__name__, err)
        return [self.generate([r])[0] for r in requests]

    def _params(self, req: GenerationRequest) -> Any:
        from vllm import SamplingParams

        if not self.decoding.sampling:
            return SamplingParams(temperature=0.0, max_tokens=self.decoding.max_new_tokens)
        return SamplingParams(temperature=self.decoding.temperature, top_p=self.decoding.top_p,
                              max_tokens=self.decoding.max_new_tokens, seed=req.seed)


def _completion(output: Any) -> Completion:
    """The answer of a vllm RequestOutput (one completion per request)."""
    first = output.outputs[0]
    reason = first.finish_reason if first.finish_reason in ("stop", "length") else str(first.finish_reason)
    return Completion(first.text, reason, len(first.token_ids))


class VLLMBackend:
    name: ClassVar[str] = "vllm"

    def __init__(self, cfg: GenerateConfig, cache_dir: Path, cells: Sequence[ModelCell]) -> None:
        try:
            import torch
            import vllm  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"{NEEDS} (import failed: {err})") from None
        if not torch.cuda.is_available():
            raise ConfigError(f"{NEEDS} (no CUDA GPU is visible)")
        self.cfg = cfg
        self.cache_dir = Path(cache_dir)
        self.decoding = Decoding.from_config(cfg)
        self._refs: dict[str, ModelRef] = {}
        self._lora_rank = _lora_ranks(cells)  # base spec -> max_lora_rank for its engine
        self._lora_ids = {c.label: i for i, c in enumerate((c for c in cells if c.kind is CellKind.ADAPTER), 1)}
        self._engine: tuple[str, Any] | None = None  # (model path, vllm.LLM)

    def _ref(self, cell: ModelCell) -> ModelRef:
        spec = str(cell.path) if cell.kind is CellKind.FULL else cell.base
        if spec not in self._refs:
            self._refs[spec] = resolve_model(spec, self.cache_dir)
        return self._refs[spec]

    def identity(self, cell: ModelCell) -> dict[str, Any]:
        ident = {"backend": self.name, **self._ref(cell).identity, **self.decoding.identity()}
        if cell.kind is CellKind.ADAPTER:
            ident["adapter"] = artifact_fingerprint(cell)
        return ident

    def open(self, cell: ModelCell) -> VLLMGenerator:
        from vllm.lora.request import LoRARequest

        ref = self._ref(cell)
        rank = self._lora_rank.get(cell.base) if cell.kind is not CellKind.FULL else None
        if self._engine is None or self._engine[0] != ref.path_or_name:
            self.close()
            self._engine = (ref.path_or_name, self._build(ref, rank))
        lora = None
        if cell.kind is CellKind.ADAPTER:
            lora = LoRARequest(lora_name=cell.label, lora_int_id=self._lora_ids[cell.label], lora_path=str(cell.path))
        return VLLMGenerator(self._engine[1], lora, self.decoding, self.identity(cell))

    def _build(self, ref: ModelRef, lora_rank: int | None) -> Any:
        import vllm

        lora: dict[str, Any] = {"enable_lora": True, "max_lora_rank": lora_rank, "max_loras": 1} if lora_rank else {}
        log.info("vllm: starting an engine for %s%s", ref.path_or_name, f" (LoRA rank <= {lora_rank})" if lora_rank else "")
        return vllm.LLM(model=ref.path_or_name, revision=ref.revision, tensor_parallel_size=self.cfg.tensor_parallel_size,
                        gpu_memory_utilization=self.cfg.gpu_memory_utilization, enable_prefix_caching=True,
                        seed=self.cfg.seed, **lora)

    def close(self) -> None:
        if self._engine is None:
            return
        self._engine = None
        gc.collect()
        try:  # vLLM has no public engine shutdown in every version: free what it holds
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        import torch

        torch.cuda.empty_cache()


def _lora_ranks(cells: Sequence[ModelCell]) -> dict[str, int]:
    """Per base model with adapter cells: the smallest rank vLLM accepts that fits all its adapters (adapter_config.json ``r``)."""
    largest: dict[str, int] = {}
    for cell in cells:
        if cell.kind is CellKind.ADAPTER:
            assert cell.path is not None
            config_path = cell.path / "adapter_config.json"
            if not config_path.is_file():
                raise ConfigError(f"{config_path} not found: {cell.label} is not a PEFT LoRA adapter folder")
            largest[cell.base] = max(largest.get(cell.base, 0), int(read_json(config_path)["r"]))
    out = {}
    for base, r in largest.items():
        fitting = [x for x in LORA_RANKS if x >= r]
        if not fitting:
            raise ConfigError(f"LoRA rank {r} of an adapter of {base} is above vLLM's largest max_lora_rank {LORA_RANKS[-1]}")
        out[base] = fitting[0]
    return out
