"""What every generation backend shares: requests, answers, decoding settings, identity, the fake, the registry.

A ``Generator`` answers chat requests for one model cell: ``generate(requests)`` takes
``GenerationRequest(messages, sample, seed)`` items and returns one ``Completion`` (text, why it
stopped, new tokens) or one ``CallFailed`` per request, in order, never raising for a single bad
request. A ``Backend`` builds the generator of each cell (``open``), reusing what it can between
cells (the loaded base model, a vLLM engine), and tells a cell's ``identity`` without loading it.

Cache keys (namespace ``generate``, see ``valind.generate.stage``)::

    Cache.key({**backend.identity(cell), "version": GENERATE_VERSION},
              {"messages": [...]}                      # greedy
              {"messages": [...], "seed": 123456789})  # sampling

In: the backend, the model identity (name + revision or file hash; a trained cell's adapter or
checkpoint fingerprint), the decoding settings (``Decoding.identity``: max_new_tokens, temperature,
and top_p only when sampling), the exact messages (system prompt included) and, only when
sampling, the request's seed. Out: batch size, concurrency, timeouts, retries, the sample index
(its seed stands for it), the cell label and suite name (two cells with the same model and
messages share answers).

Seeds: a sampled request's seed is ``request_seed(seed, prompt_messages, sample)``, a 31-bit hash of
the config seed, the suite prompt (before any system prompt) and the sample index; so sample k of a
prompt gets the same seed in every cell (common random numbers across models), and the n samples
of a prompt get n different seeds. Backends draw each request's randomness from its own seed, so an
answer does not depend on the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from valind.errors import UnknownNameError
from valind.extract.llm import CallFailed
from valind.schema import Message
from valind.workspace import hash_json

if TYPE_CHECKING:
    from valind.generate.cells import ModelCell
    from valind.generate.config import GenerateConfig

GENERATE_VERSION = 1  # bump when a change here changes the answer for the same identity and messages
NAMESPACE = "generate"
BACKENDS = ("hf", "vllm", "openai", "fake")
SEED_BITS = 31  # OpenAI-compatible servers and vLLM take a 32-bit signed seed


class GenerationRequest(NamedTuple):
    """One answer to produce: the full chat (system prompt included), which sample of the prompt, its seed.

    ``seed`` is used only when sampling; greedy requests carry 0.
    """

    messages: list[Message]
    sample: int = 0
    seed: int = 0


class Completion(NamedTuple):
    """One answer. ``finish_reason``: ``stop`` (end-of-sequence token or stop string) or ``length``
    (max_new_tokens reached: the text is cut). ``tokens``: new tokens generated, None where the server
    does not say. Example: ``Completion("Paris.", "stop", 3)``."""

    text: str
    finish_reason: str
    tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason, "tokens": self.tokens}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Completion:
        return cls(d["text"], d["finish_reason"], d.get("tokens"))


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded. ``temperature`` 0 is greedy; ``top_p`` applies to sampling only."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.sampling:
            ident["top_p"] = self.top_p
        return ident

    @classmethod
    def from_config(cls, cfg: GenerateConfig) -> Decoding:
        return cls(cfg.max_new_tokens, cfg.temperature, cfg.top_p)


def request_seed(seed: int, prompt: Sequence[Message], sample: int) -> int:
    """The seed of sample ``sample`` of a suite prompt (see the module doc), in [0, 2**31)."""
    return int(hash_json([seed, list(prompt), sample])[:8], 16) % (1 << SEED_BITS)


class Generator(Protocol):
    """Answers chat requests with one model cell."""

    name: ClassVar[str]

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output for given messages (see the module doc); hashed into every cache key."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion | CallFailed]:
        """One Completion or CallFailed per request, in order. A failure is returned, never raised."""
        ...


class Backend(Protocol):
    """Builds the generator of each model cell, reusing loaded models between cells."""

    name: ClassVar[str]

    def identity(self, cell: ModelCell) -> dict[str, Any]:
        """The identity ``open(cell)`` will have, without loading anything heavy."""
        ...

    def open(self, cell: ModelCell) -> Generator:
        """A generator for ``cell``; the previous one of this backend may stop working."""
        ...

    def close(self) -> None:
        """Release models and engines."""
        ...


def make_backend(cfg: GenerateConfig, cache_dir: Path, cells: Sequence[ModelCell]) -> Backend:
    """The configured backend for these cells. Heavy libraries are imported only for the backend in use."""
    name = cfg.backend.value
    if name not in BACKENDS:
        raise UnknownNameError("generation backend", name, list(BACKENDS))
    if name == "fake":
        return FakeBackend(cfg)
    if name == "hf":
        from valind.generate.hf import HFBackend

        return HFBackend(cfg, cache_dir)
    if name == "vllm":
        from valind.generate.vllm_backend import VLLMBackend

        return VLLMBackend(cfg, cache_dir, cells)
    from valind.generate.openai_backend import OpenAIBackend

    return OpenAIBackend(cfg, cells)


# ---------------------------------------------------------------- the fake


class FakeGenerator:
    """Deterministic answers without a model: ``"<tag> says: <last user message>"``, plus the seed
    when sampling, e.g. ``"base says: Tell me a joke."``. A request whose messages contain
    ``fail_on`` fails with ``CallFailed("fake failure")``. ``calls`` counts requests answered,
    ``batches`` the size of each generate call."""

    name: ClassVar[str] = "fake"

    def __init__(self, tag: str, decoding: Decoding, fail_on: str | None = None) -> None:
        self.tag = tag
        self.decoding = decoding
        self.fail_on = fail_on
        self.calls = 0
        self.batches: list[int] = []

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.tag, **self.decoding.identity()}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion | CallFailed]:
        self.batches.append(len(requests))
        out: list[Completion | CallFailed] = []
        for req in requests:
            self.calls += 1
            if self.fail_on is not None and any(self.fail_on in m["content"] for m in req.messages):
                out.append(CallFailed("fake failure"))
                continue
            user = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
            text = f"{self.tag} says: {user}" + (f" [seed {req.seed}]" if self.decoding.sampling else "")
            words = text.split()
            cut = words[: self.decoding.max_new_tokens]
            out.append(Completion(" ".join(cut), "length" if len(cut) < len(words) else "stop", len(cut)))
        return out


class FakeBackend:
    """One FakeGenerator per cell, tagged with the cell label; ``generators`` keeps them for tests."""

    name: ClassVar[str] = "fake"

    def __init__(self, cfg: GenerateConfig, fail_on: str | None = None) -> None:
        self.decoding = Decoding.from_config(cfg)
        self.fail_on = fail_on
        self.generators: dict[str, FakeGenerator] = {}

    def identity(self, cell: ModelCell) -> dict[str, Any]:
        return {"backend": self.name, "model": cell.label, **self.decoding.identity()}

    def open(self, cell: ModelCell) -> FakeGenerator:
        gen = FakeGenerator(cell.label, self.decoding, self.fail_on)
        self.generators[cell.label] = gen
        return gen

    def close(self) -> None:
        return None
