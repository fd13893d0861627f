"""The ``vllm`` extractor: offline ``vllm.LLM`` batches with JSON-schema structured output (GPU).

One ``LLM.chat`` call per batch of conversations: vLLM schedules them together (continuous
batching) and, with prefix caching on, computes the long fixed instruction that starts every
prompt once. The answer is constrained to ``prompting.json_schema(vocab, mode)`` (in closed mode
an enum of the vocabulary names), so parse errors should not happen; ``ChatExtractor`` still
parses, retries and maps as for any backend.

vLLM's structured-output API changed: from v0.10.2 it is
``SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))`` (the old fields were
removed in v0.12); before, ``SamplingParams(guided_decoding=GuidedDecodingParams(json=schema))``.
Both are supported, chosen by which name ``vllm.sampling_params`` exports.

If the batch call raises (for example one prompt longer than the model's context), the
conversations are sent again one at a time so only the bad ones fail; each failure is a
``CallFailed`` with the error text. Sampled answers (``temperature > 0``) carry a per-request
seed, so an item's answer does not depend on the rest of its batch.

Needs a CUDA GPU and ``pip install vllm``; the package is imported only when this backend is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from valind.errors import ConfigError
from valind.extract.llm import CallFailed, ChatExtractor
from valind.extract.prompting import Mode, ValueMapper, json_schema
from valind.models import PACKAGED_SMOLLM2, ModelRef, resolve_model
from valind.schema import Message
from valind.values import Vocabulary

if TYPE_CHECKING:
    from valind.config import ExtractConfig

log = logging.getLogger(__name__)

NEEDS = "the vllm extractor needs a CUDA GPU and `pip install vllm`"


class VLLMExtractor(ChatExtractor):
    name: ClassVar[str] = "vllm"

    def __init__(self, vocab: Vocabulary, llm: Any, sampling_params: Any, ref: ModelRef, *, max_new_tokens: int = 96,
                 temperature: float = 0.0, seed: int = 0, mode: Mode = Mode.CLOSED, with_prompt: bool = True,
                 max_retries: int = 2, mapper: ValueMapper | None = None) -> None:
        super().__init__(vocab, mode=mode, with_prompt=with_prompt, max_retries=max_retries, mapper=mapper)
        self.llm = llm  # a vllm.LLM
        self.sampling_params = sampling_params
        self.ref = ref
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed

    @classmethod
    def from_config(cls, cfg: ExtractConfig, vocab: Vocabulary, mapper: ValueMapper, cache_dir: Path) -> VLLMExtractor:
        try:
            import torch
            import vllm
        except ImportError as err:
            raise ConfigError(f"{NEEDS} (import failed: {err})") from None
        if not torch.cuda.is_available():
            raise ConfigError(f"{NEEDS} (no CUDA GPU is visible)")
        ref = resolve_model(cfg.model or PACKAGED_SMOLLM2, cache_dir, cfg.revision)
        mode = Mode(cfg.mode)
        llm = vllm.LLM(model=ref.path_or_name, revision=ref.revision, tensor_parallel_size=cfg.tensor_parallel_size,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, enable_prefix_caching=True, seed=cfg.seed)
        sample = cfg.temperature > 0
        params = vllm.SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_new_tokens,
                                     seed=cfg.seed if sample else None, **structured_output(json_schema(vocab, mode)))
        return cls(vocab, llm, params, ref, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                   seed=cfg.seed, mode=mode, with_prompt=cfg.with_prompt, max_retries=cfg.max_retries, mapper=mapper)

    def model_identity(self) -> dict[str, Any]:
        ident = {**self.ref.identity, "structured_output": "json_schema",
                 "max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.temperature > 0:
            ident["seed"] = self.seed
        return ident

    def generate(self, conversations: list[list[Message]]) -> list[str | CallFailed]:
        if not conversations:
            return []
        try:
            return [_answer(out) for out in self._chat(conversations)]
        except Exception as err:  # vLLM's error types vary by version; every one is recorded per item below
            if len(conversations) == 1:
                log.warning("vllm extractor: a request failed", exc_info=True)
                return [CallFailed(f"{type(err).__name__}: {err}")]
            log.warning("vllm extractor: a batch of %d failed (%s: %s); sending it one at a time",
                        len(conversations), type(err).__name__, err)
        return [self.generate([conv])[0] for conv in conversations]

    def _chat(self, conversations: list[list[Message]]) -> list[Any]:
        return self.llm.chat(conversations, self.sampling_params, use_tqdm=False)


def _answer(output: Any) -> str:
    """The text of a vllm RequestOutput (one completion per request)."""
    return output.outputs[0].text


def structured_output(schema: dict[str, Any]) -> dict[str, Any]:
    """The SamplingParams keyword that constrains answers to ``schema``, for the installed vLLM."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM before 0.10.2
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}
