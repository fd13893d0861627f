"""The part every LLM extractor backend shares: render, generate, parse, retry, map.

A backend implements ``generate``: a batch of chat conversations in, one answer text (or a
``CallFailed``) per conversation out. This class turns items into conversations, parses the
answers, asks again (with a repair turn) for answers that do not parse, up to ``max_retries``
times, and maps the names onto the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from valind.extract.base import Extraction, Item, Status
from valind.extract.prompting import PROMPT_VERSION, Mode, ParseError, ValueMapper, parse_values, render, repair_turns
from valind.schema import Message
from valind.values import Vocabulary


class CallFailed(Exception):
    """A model call failed for good (after the client's own retries); recorded, never cached."""


class ChatExtractor:
    name: ClassVar[str] = ""

    def __init__(self, vocab: Vocabulary, *, mode: Mode = Mode.CLOSED, with_prompt: bool = True,
                 max_retries: int = 2, mapper: ValueMapper | None = None) -> None:
        self.vocab = vocab
        self.mode = mode
        self.uses_prompt = with_prompt
        self.max_retries = max_retries
        self.mapper = mapper or ValueMapper(vocab)

    # --- what a backend provides
    def generate(self, conversations: list[list[Message]]) -> list[str | CallFailed]:
        raise NotImplementedError

    def model_identity(self) -> dict[str, Any]:
        raise NotImplementedError

    # --- shared
    def identity(self) -> dict[str, Any]:
        ident = {"backend": self.name, "prompt_version": PROMPT_VERSION, "mode": self.mode.value,
                 "with_prompt": self.uses_prompt, "vocabulary": self.vocab.fingerprint, **self.model_identity()}
        if self.mode is Mode.OPEN:
            ident["map_threshold"] = self.mapper.threshold if self.mapper.embed else None
        return ident

    def extract(self, items: Sequence[Item]) -> list[Extraction]:
        convs = [render(self.vocab, self.mode, it.prompt if self.uses_prompt else [], it.response) for it in items]
        results: list[Extraction | None] = [None] * len(items)
        pending = list(range(len(items)))
        for attempt in range(self.max_retries + 1):
            answers = self.generate([convs[i] for i in pending])
            retry: list[int] = []
            for i, answer in zip(pending, answers):
                if isinstance(answer, CallFailed):
                    results[i] = Extraction((), None, "", Status.ERROR, str(answer))
                    continue
                try:
                    terms = parse_values(answer)
                except ParseError as err:
                    results[i] = Extraction((), None, answer, Status.PARSE_ERROR, f"{err} (attempt {attempt + 1})")
                    convs[i] = convs[i][:2] + repair_turns(answer)
                    retry.append(i)
                    continue
                values, unmapped = self.mapper.map(terms)
                results[i] = Extraction(values, None, answer, Status.OK, None, unmapped)
            pending = retry
            if not pending:
                break
        return [r for r in results if r is not None]
