"""The ``hf`` extractor: any transformers causal LM with a chat template, batched ``generate``.

The generation loop is ``valind.generate.hf.ChatBatcher``, shared with the ``hf`` generation
backend: each conversation is rendered with the tokenizer's own chat template (system message
kept; ``add_generation_prompt=True``), the batch is sorted by length (less padding) and cut into
chunks of ``batch_size``, each chunk is LEFT-padded so every prompt ends where generation
starts, and only the new tokens are decoded. Greedy when ``temperature == 0``; otherwise each
item is sampled from its own RNG, seeded from ``seed`` and the item's conversation (so an item
gets the same answer in any run and any batch; the global RNG is left alone).

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

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from valind.extract.llm import CallFailed, ChatExtractor
from valind.extract.prompting import Mode, ValueMapper
from valind.generate.base import Decoding
from valind.generate.hf import ChatBatcher
from valind.models import PACKAGED_SMOLLM2, LoadedModel, ModelRef, load_causal_lm, resolve_model
from valind.schema import Message
from valind.values import Vocabulary
from valind.workspace import hash_json

if TYPE_CHECKING:
    from valind.config import ExtractConfig


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
        self._batcher = ChatBatcher(self.model, self.tokenizer, self.device, batch_size)  # sets left padding

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
        seeds = [_item_seed(self.seed, c) for c in conversations] if self.temperature > 0 else None
        decoding = Decoding(max_new_tokens=self.max_new_tokens, temperature=self.temperature)
        return [a if isinstance(a, CallFailed) else a.text for a in self._batcher.generate(conversations, decoding, seeds)]


def _item_seed(seed: int, conversation: list[Message]) -> int:
    """The sampling seed of one conversation: its answer depends on the seed and the conversation only."""
    return int(hash_json([seed, conversation])[:15], 16)
