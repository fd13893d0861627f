"""The ``hf`` extractor: any transformers causal LM with a chat template, batched ``generate``.

Each conversation is rendered with the tokenizer's own chat template (system message kept;
``add_generation_prompt=True``), the batch is sorted by length (less padding) and cut into
chunks of ``batch_size``, each chunk is LEFT-padded so every prompt ends where generation
starts, and only the new tokens are decoded. Greedy when ``temperature == 0``; otherwise
sampling with the torch RNG seeded per chunk from ``seed`` and the chunk's prompts (so the same
chunk gives the same answers in any run; the global RNG state is restored afterwards).

Failures stay per item and loud: a prompt longer than the tokenizer's ``model_max_length`` minus
``max_new_tokens`` is a ``CallFailed`` without a model call; an exception from the model fails
every item of its chunk with the error text (and is logged with its traceback). Answers that do
not parse are asked again by ``ChatExtractor``.

Runs on CPU in float32 and on one CUDA GPU in bfloat16. Measured on a shared, noisy 2-core CPU with
the packaged SmolLM2-135M-Instruct, batch 4, greedy: loading 1-3 s once converted; 4 items with the
default 15-value vocabulary (~750-token prompts), max_new_tokens 96 and 2 retries (all 4 answers
failed to parse, so 3 rounds): 52 s in a quiet minute, up to 300 s under load; 4 items with a
4-value vocabulary, max_new_tokens 48 and 1 retry: ~6 s. A 135M model rarely answers in the
required JSON form, so with it this backend tests plumbing, not annotation quality. For real runs
use ``vllm`` or ``openai``; this backend is for small jobs and for models vLLM does not serve.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from valind.extract.llm import CallFailed, ChatExtractor
from valind.extract.prompting import Mode, ValueMapper
from valind.models import PACKAGED_SMOLLM2, LoadedModel, ModelRef, load_causal_lm, resolve_model
from valind.schema import Message
from valind.values import Vocabulary
from valind.workspace import hash_json

if TYPE_CHECKING:
    from valind.config import ExtractConfig

log = logging.getLogger(__name__)

# What a failing generate() raises: torch errors (out of memory, CUDA errors) are RuntimeErrors;
# bad shapes or settings ValueErrors; positions past the model's table IndexErrors.
_MODEL_ERRORS = (RuntimeError, ValueError, IndexError)


class HFExtractor(ChatExtractor):
    name: ClassVar[str] = "hf"

    def __init__(self, vocab: Vocabulary, loaded: LoadedModel, ref: ModelRef, *, max_new_tokens: int = 96,
                 temperature: float = 0.0, seed: int = 0, batch_size: int = 32, mode: Mode = Mode.CLOSED,
                 with_prompt: bool = True, max_retries: int = 2, mapper: ValueMapper | None = None) -> None:
        super().__init__(vocab, mode=mode, with_prompt=with_prompt, max_retries=max_retries, mapper=mapper)
        self.model, self.tokenizer, self.device, self.dtype = loaded
        self.ref = ref
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"  # prompts must end where generation starts
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._eos_ids = _eos_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)

    @classmethod
    def from_config(cls, cfg: ExtractConfig, vocab: Vocabulary, mapper: ValueMapper, cache_dir: Path) -> HFExtractor:
        ref = resolve_model(cfg.model or PACKAGED_SMOLLM2, cache_dir, cfg.revision)
        return cls(vocab, load_causal_lm(ref), ref, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                   seed=cfg.seed, batch_size=cfg.batch_size, mode=Mode(cfg.mode), with_prompt=cfg.with_prompt,
                   max_retries=cfg.max_retries, mapper=mapper)

    def model_identity(self) -> dict[str, Any]:
        ident = {**self.ref.identity, "dtype": str(self.dtype).removeprefix("torch."),
                 "max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.temperature > 0:
            ident["seed"] = self.seed
        return ident

    def generate(self, conversations: list[list[Message]]) -> list[str | CallFailed]:
        """One answer per conversation, in order; a CallFailed where the prompt is too long or the model failed."""
        if not conversations:
            return []
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        # The template already holds the special tokens (BOS and role markers): add none.
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out: list[str | CallFailed] = [CallFailed("not generated")] * len(conversations)
        limit = self.tokenizer.model_max_length - self.max_new_tokens
        fits = []
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                out[i] = CallFailed(f"prompt of {len(seq)} tokens leaves no room for {self.max_new_tokens} new tokens "
                                    f"in the model's context of {self.tokenizer.model_max_length}")
            else:
                fits.append(i)
        fits.sort(key=lambda i: len(ids[i]))
        for start in range(0, len(fits), self.batch_size):
            chunk = fits[start:start + self.batch_size]
            try:
                answers: list[str | CallFailed] = list(self._generate_chunk([ids[i] for i in chunk]))
            except _MODEL_ERRORS as err:
                log.warning("hf extractor: a batch of %d failed", len(chunk), exc_info=True)
                answers = [CallFailed(f"{type(err).__name__}: {err}") for _ in chunk]
            for i, answer in zip(chunk, answers, strict=True):
                out[i] = answer
        return out

    def _generate_chunk(self, ids: list[list[int]]) -> list[str]:
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        sample = self.temperature > 0
        settings: dict[str, Any] = {"do_sample": sample, "max_new_tokens": self.max_new_tokens,
                                    "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self._eos_ids}
        if sample:
            settings["temperature"] = self.temperature
        else:  # greedy: clear the model's own sampling defaults instead of warning about them
            settings.update(temperature=None, top_p=None, top_k=None)
        rng_devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=rng_devices):
            if sample:
                torch.manual_seed(int(hash_json([self.seed, ids])[:15], 16))
            generated = self.model.generate(**batch, **settings)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _eos_ids(*sources: int | list[int] | None) -> list[int]:
    """Every token id that ends an answer: the generation config's (an int or a list) and the tokenizer's."""
    ids: list[int] = []
    for src in sources:
        for i in [src] if isinstance(src, int) else src or []:
            if i not in ids:
                ids.append(i)
    return ids
