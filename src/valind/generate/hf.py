"""The ``hf`` backend: transformers ``generate`` in left-padded batches, base models, LoRA adapters, full checkpoints.

``ChatBatcher`` is the generation loop, shared with the ``hf`` value extractor
(``valind.extract.hf``): each conversation is rendered with the tokenizer's own chat template
(``add_generation_prompt=True``; the template holds BOS and role markers, so no special tokens are
added), prompts are sorted by length (less padding) and cut into chunks of ``batch_size``, each
chunk is LEFT-padded so every prompt ends where generation starts, generation stops at any
end-of-sequence id (the model's generation config and the tokenizer's), and only the new tokens
are decoded.

Decoding is exactly what the caller asks: the model's own ``generation_config`` sampling defaults
(temperature, top-k, top-p, repetition penalty; e.g. Llama-3-Instruct ships ``do_sample=True,
temperature=0.6``) are overridden with neutral values. Greedy when ``temperature == 0``.

Sampling draws every row from its own RNG: greedy search over ``logits / temperature`` (cut to
``top_p``) plus Gumbel noise from a ``torch.Generator`` seeded with the request's seed, which
samples exactly from the softmax (the Gumbel-max trick). A row's answer depends only on its prompt
and seed, not on the batch it is in; the global torch RNG is left alone. There is no top-k.

Failures stay per item: a prompt longer than the tokenizer's ``model_max_length`` minus
``max_new_tokens`` is a ``CallFailed`` without a model call; an exception from the model fails
every item of its chunk with the error text (logged with its traceback).

``HFBackend`` keeps one base model loaded and reuses it for the base cell, the ``system`` cells and
the LoRA adapter cells of that base: an adapter is wrapped around it with
``peft.PeftModel.from_pretrained`` and removed again (``unload``) before the next cell. A full
fine-tuned checkpoint is loaded from its own folder. float32 on CPU; bfloat16 on one CUDA GPU.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from valind.extract.llm import CallFailed
from valind.generate.base import Completion, Decoding, GenerationRequest
from valind.generate.cells import CellKind, ModelCell, artifact_fingerprint
from valind.generate.config import GenerateConfig
from valind.models import LoadedModel, ModelRef, load_causal_lm, resolve_model
from valind.schema import Message

log = logging.getLogger(__name__)

# What a failing generate() raises: torch errors (out of memory, CUDA errors) are RuntimeErrors;
# bad shapes or settings ValueErrors; positions past the model's table IndexErrors.
MODEL_ERRORS = (RuntimeError, ValueError, IndexError)
# Values that switch off every decoding rule a model's generation_config may carry (transformers
# fills unset fields from it); do_sample stays False: sampling is done by _GumbelSampler.
_NEUTRAL = {"do_sample": False, "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0,
            "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0}


class ChatBatcher:
    """Batched chat generation with one loaded causal LM (see the module doc for the rules)."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"  # prompts must end where generation starts
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_ids(model.generation_config.eos_token_id, tokenizer.eos_token_id)

    def generate(self, conversations: Sequence[list[Message]], decoding: Decoding,
                 seeds: Sequence[int] | None = None) -> list[Completion | CallFailed]:
        """One answer per conversation, in order; ``seeds`` (one per conversation) are needed when sampling."""
        if decoding.sampling and (seeds is None or len(seeds) != len(conversations)):
            raise ValueError("sampling needs one seed per conversation")
        if not conversations:
            return []
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out: list[Completion | CallFailed] = [CallFailed("not generated")] * len(conversations)
        limit = self.tokenizer.model_max_length - decoding.max_new_tokens
        fits = []
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                out[i] = CallFailed(f"prompt of {len(seq)} tokens leaves no room for {decoding.max_new_tokens} new tokens "
                                    f"in the model's context of {self.tokenizer.model_max_length}")
            else:
                fits.append(i)
        fits.sort(key=lambda i: len(ids[i]))
        for start in range(0, len(fits), self.batch_size):
            chunk = fits[start:start + self.batch_size]
            try:
                answers: list[Completion | CallFailed] = list(
                    self._generate_chunk([ids[i] for i in chunk], decoding, [seeds[i] for i in chunk] if seeds else None)
                )
            except MODEL_ERRORS as err:
                log.warning("hf: a batch of %d failed", len(chunk), exc_info=True)
                answers = [CallFailed(f"{type(err).__name__}: {err}") for _ in chunk]
            for i, answer in zip(chunk, answers, strict=True):
                out[i] = answer
        return out

    def _generate_chunk(self, ids: list[list[int]], decoding: Decoding, seeds: list[int] | None) -> list[Completion]:
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        processors = LogitsProcessorList()
        if decoding.sampling:
            assert seeds is not None
            processors.append(_GumbelSampler(seeds, decoding.temperature, decoding.top_p, self.device))
        with torch.inference_mode():
            generated = self.model.generate(
                **batch, **_NEUTRAL, max_new_tokens=decoding.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.eos_ids, logits_processor=processors,
            )
        new_tokens = generated[:, batch["input_ids"].shape[1]:].tolist()
        return [self._completion(row) for row in new_tokens]

    def _completion(self, row: list[int]) -> Completion:
        """The answer up to (not including) the first end-of-sequence token; padding after it is dropped."""
        end = next((k for k, tok in enumerate(row) if tok in self.eos_ids), None)
        tokens = row if end is None else row[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(text, "length" if end is None else "stop", len(tokens))


class _GumbelSampler(LogitsProcessor):
    """Turns greedy search into sampling with one RNG per row (the Gumbel-max trick):
    ``argmax(logits / T + G)`` with ``G = -log(-log(U))``, ``U`` uniform, is a sample of ``softmax(logits / T)``."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = _top_p(scores, self.top_p)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(uniform.dtype).tiny)))
        return scores + gumbel


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most probable tokens until their total probability reaches ``top_p`` (at least one); the rest get -inf."""
    ordered, order = torch.sort(scores, descending=True, dim=-1)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative - ordered.softmax(dim=-1) >= top_p  # tokens whose predecessors already reach top_p
    drop[..., 0] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def eos_ids(*sources: int | list[int] | None) -> list[int]:
    """Every token id that ends an answer: the generation config's (an int or a list) and the tokenizer's."""
    ids: list[int] = []
    for src in sources:
        for i in [src] if isinstance(src, int) else src or []:
            if i not in ids:
                ids.append(i)
    return ids


# ---------------------------------------------------------------- the backend


class HFGenerator:
    """A Generator over one loaded model (a base, a base with an adapter, or a full checkpoint)."""

    name: ClassVar[str] = "hf"

    def __init__(self, batcher: ChatBatcher, decoding: Decoding, identity: dict[str, Any]) -> None:
        self.batcher = batcher
        self.decoding = decoding
        self._identity = identity

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion | CallFailed]:
        seeds = [r.seed for r in requests] if self.decoding.sampling else None
        return self.batcher.generate([r.messages for r in requests], self.decoding, seeds)


class HFBackend:
    """Loads each model once; LoRA adapters go on and off the loaded base (see the module doc)."""

    name: ClassVar[str] = "hf"

    def __init__(self, cfg: GenerateConfig, cache_dir: Path) -> None:
        self.decoding = Decoding.from_config(cfg)
        self.batch_size = cfg.resolved_batch_size
        self.cache_dir = Path(cache_dir)
        self._refs: dict[str, ModelRef] = {}
        self._loaded: tuple[str, LoadedModel] | None = None  # (path, model) of the model in memory
        self._adapter: Any = None  # the PeftModel wrapped around the loaded base, while an adapter cell is open

    def _ref(self, cell: ModelCell) -> ModelRef:
        spec = str(cell.path) if cell.kind is CellKind.FULL else cell.base
        if spec not in self._refs:
            self._refs[spec] = resolve_model(spec, self.cache_dir)
        return self._refs[spec]

    def identity(self, cell: ModelCell) -> dict[str, Any]:
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # as load_causal_lm chooses
        ident = {"backend": self.name, **self._ref(cell).identity, "dtype": dtype, **self.decoding.identity()}
        if cell.kind is CellKind.ADAPTER:
            ident["adapter"] = artifact_fingerprint(cell)
        return ident

    def open(self, cell: ModelCell) -> HFGenerator:
        self._remove_adapter()
        ref = self._ref(cell)
        if self._loaded is None or self._loaded[0] != ref.path_or_name:
            self._release()
            log.info("hf: loading %s", ref.path_or_name)
            self._loaded = (ref.path_or_name, load_causal_lm(ref))
        loaded = self._loaded[1]
        model = loaded.model
        if cell.kind is CellKind.ADAPTER:
            from peft import PeftModel

            assert cell.path is not None
            self._adapter = PeftModel.from_pretrained(model, str(cell.path), is_trainable=False)
            self._adapter.eval()
            model = self._adapter
        batcher = ChatBatcher(model, loaded.tokenizer, loaded.device, self.batch_size)
        return HFGenerator(batcher, self.decoding, self.identity(cell))

    def close(self) -> None:
        self._remove_adapter()
        self._release()

    def _remove_adapter(self) -> None:
        if self._adapter is not None:
            self._adapter.unload()  # takes the LoRA layers out of the base, unmerged: the base is as loaded
            self._adapter = None

    def _release(self) -> None:
        if self._loaded is not None:
            self._loaded = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
