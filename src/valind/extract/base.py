"""What every value extractor shares: its input, its output, its identity, and the registry.

An extractor takes (prompt messages, response) items and returns, for each, the set of
vocabulary values the response actively expresses. Backends:

- ``embedded`` (default): offline on CPU; sentence embeddings + lexical cues + a small classifier
  fitted on the project's labelled responses.
- ``hf``: any transformers causal LM with its chat template, batched generation.
- ``vllm``: offline ``vllm.LLM`` batch with JSON-schema structured output (GPU).
- ``openai``: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, ...).
- ``fake``: deterministic keyword matching, for fast tests.

The cache key of an item is ``identity()`` (everything that changes the output: model and
revision or file hash, decoding settings, prompt version, vocabulary) plus the item's content.
Settings that do not change output (batch size, timeouts, retries, concurrency) stay out.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Protocol

from valind.schema import Message


class Status(StrEnum):
    OK = "ok"
    PARSE_ERROR = "parse_error"  # the model answered, but not in the required form, after all retries
    ERROR = "error"  # the call failed (server error, timeout) after all retries


class Item(NamedTuple):
    """One response to score, with the conversation it answers (may be empty)."""

    prompt: list[Message]
    response: str


class Extraction(NamedTuple):
    """The values one response expresses.

    ``values``: sorted vocabulary names. ``scores``: value -> score in [0, 1] where the backend
    has them (else None). ``raw``: the model's raw output (or a short trace for ``embedded``).
    ``unmapped``: free-text values an open-mode LLM named that match no vocabulary value.
    """

    values: tuple[str, ...]
    scores: dict[str, float] | None
    raw: str
    status: Status
    error: str | None = None
    unmapped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        return {"values": list(self.values), "scores": self.scores, "raw": self.raw, "unmapped": list(self.unmapped)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Extraction:
        return cls(tuple(d["values"]), d["scores"], d["raw"], Status.OK, None, tuple(d.get("unmapped", ())))


class Extractor(Protocol):
    """A value extractor backend."""

    name: ClassVar[str]
    uses_prompt: bool  # whether the conversation is part of the input (else only the response text)

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output; hashed into every cache key."""
        ...

    def extract(self, items: Sequence[Item]) -> list[Extraction]:
        """One Extraction per item, in order. A failure is an Extraction with a non-OK status, never an exception."""
        ...
