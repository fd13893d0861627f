"""A deterministic in-memory extractor for fast tests: a value is expressed when its name or an
alias occurs as a word in the response (prompt ignored). Same input, same output, no model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from valind.extract.base import Extraction, Item, Status
from valind.values import Vocabulary, normalise

FAKE_VERSION = 1


class FakeExtractor:
    name: ClassVar[str] = "fake"
    uses_prompt = False

    def __init__(self, vocab: Vocabulary, fail_on: str | None = None) -> None:
        self.vocab = vocab
        self.fail_on = fail_on  # a response containing this text fails (to test failure handling)
        self.calls = 0  # items seen, so tests can count model calls
        self._patterns = {
            v.name: re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted({v.name, *map(normalise, v.aliases)})) + r")\b")
            for v in vocab.values
        }

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "version": FAKE_VERSION, "vocabulary": self.vocab.fingerprint}

    def extract(self, items: Sequence[Item]) -> list[Extraction]:
        out = []
        for item in items:
            self.calls += 1
            if self.fail_on is not None and self.fail_on in item.response:
                out.append(Extraction((), None, "", Status.ERROR, "fake failure"))
                continue
            text = normalise(item.response)
            found = tuple(sorted(name for name, pat in self._patterns.items() if pat.search(text)))
            out.append(Extraction(found, {v: 1.0 for v in found}, f"matched: {', '.join(found)}", Status.OK))
        return out
