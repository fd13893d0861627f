"""What every judge shares: its input, its result, its identity, the fake and the registry.

A judge answers one yes/no question about each assistant response: is it a refusal? does the
assistant present itself as human-like (anthropomorphic)? does it praise or agree beyond what the
content warrants (validating)? It maps (prompt messages, response) items, the same ``Item`` the
value extractors read, to one ``Judgement`` per item, in order:

- ``decision``: the yes/no answer;
- ``score``: in [0, 1], higher means more confident "yes" (rules: their points through a logistic
  curve, 0.5 at the decision threshold; LLM judges: 1.0 or 0.0, they give no graded answer);
- ``raw``: the model's raw output, or for rule judges the names of the cues that fired;
- ``status``: ``ok``, ``parse_error`` (the model answered, not in the required form) or
  ``error`` (the call failed). A failed item has ``decision=False, score=0.0`` and must be
  counted as failed by the caller, never as "no".

Backends, by name (``make_judge(label, name)``):

- ``rules`` (default): offline cue inventories, microseconds per response
  (``refusal``: valind.judges.refusal; ``anthropomorphic`` / ``validating``: valind.judges.anthro);
- ``llm``: a rubric prompt through any chat backend (valind.judges.llm);
- ``wildguard``: ``allenai/wildguard``'s own prompt through a completion backend (``refusal`` only);
- ``fake``: substring matching, for tests.

``identity()`` is everything that changes the output (rule set version, model, prompt version,
decoding settings); with the item's content it makes the cache key, as for extractors.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Protocol

from valind.errors import UnknownNameError
from valind.extract.base import Item, Status

FAKE_VERSION = 1


class Label(StrEnum):
    """The questions a judge can answer; the value is the output field name."""

    REFUSAL = "refusal"
    ANTHROPOMORPHIC = "anthropomorphic"
    VALIDATING = "validating"


class Judgement(NamedTuple):
    """One judge's answer about one response (see the module docstring for each field)."""

    decision: bool
    score: float
    raw: str
    status: Status = Status.OK
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        """What the cache stores (only OK judgements are ever stored)."""
        return {"decision": self.decision, "score": self.score, "raw": self.raw}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Judgement:
        return cls(bool(d["decision"]), float(d["score"]), str(d["raw"]))

    @classmethod
    def failed(cls, status: Status, error: str, raw: str = "") -> Judgement:
        return cls(False, 0.0, raw, status, error)


class Judge(Protocol):
    """A judge backend for one label."""

    name: ClassVar[str]  # the backend: rules, llm, wildguard, fake
    label: Label
    uses_prompt: bool  # whether the conversation before the response is part of the input

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output; hashed into every cache key."""
        ...

    def judge(self, items: Sequence[Item]) -> list[Judgement]:
        """One Judgement per item, in order. A failure is a Judgement with a non-OK status, never an exception."""
        ...


class FakeJudge:
    """Deterministic and in memory: "yes" when any of ``triggers`` occurs in the lower-cased response.

    A response containing ``fail_on`` gets an ``error`` Judgement, to test failure handling.
    ``calls`` counts the items seen.
    """

    name: ClassVar[str] = "fake"
    uses_prompt = False

    def __init__(self, label: Label | str = Label.REFUSAL, triggers: Sequence[str] = ("sorry", "can't", "cannot"),
                 fail_on: str | None = None) -> None:
        self.label = Label(label)
        self.triggers = tuple(t.lower() for t in triggers)
        self.fail_on = fail_on
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "label": self.label.value, "version": FAKE_VERSION, "triggers": list(self.triggers)}

    def judge(self, items: Sequence[Item]) -> list[Judgement]:
        out = []
        for item in items:
            self.calls += 1
            if self.fail_on is not None and self.fail_on in item.response:
                out.append(Judgement.failed(Status.ERROR, "fake failure"))
                continue
            hits = [t for t in self.triggers if t in item.response.lower()]
            out.append(Judgement(bool(hits), 1.0 if hits else 0.0, "matched: " + ", ".join(hits)))
        return out


# backend name -> the labels it can judge
BACKENDS: dict[str, tuple[Label, ...]] = {
    "rules": (Label.REFUSAL, Label.ANTHROPOMORPHIC, Label.VALIDATING),
    "llm": (Label.REFUSAL, Label.ANTHROPOMORPHIC, Label.VALIDATING),
    "wildguard": (Label.REFUSAL,),
    "fake": (Label.REFUSAL, Label.ANTHROPOMORPHIC, Label.VALIDATING),
}


def make_judge(label: Label | str, name: str = "rules", **options: Any) -> Judge:
    """The judge ``name`` for ``label``; unknown names raise UnknownNameError listing the valid ones.

    ``options`` go to the backend's constructor: ``llm`` needs ``backend=`` (an object with
    ``generate(conversations)`` and ``model_identity()``, e.g. any ChatExtractor), ``wildguard``
    needs ``backend=`` (an object with ``complete(prompts)`` and ``model_identity()``), ``fake``
    takes ``triggers=`` and ``fail_on=``.
    """
    labels = [lab.value for lab in Label]
    if str(label) not in labels:
        raise UnknownNameError("judge label", str(label), labels)
    label = Label(label)
    valid = [n for n, labels in BACKENDS.items() if label in labels]
    if name not in valid:
        raise UnknownNameError(f"{label.value} judge", name, valid)
    if name == "fake":
        return FakeJudge(label, **options)
    if name == "llm":
        from valind.judges.llm import LLMJudge

        return LLMJudge(label=label, **options)
    if name == "wildguard":
        from valind.judges.refusal import WildGuardJudge

        return WildGuardJudge(**options)
    if label is Label.REFUSAL:
        from valind.judges.refusal import RefusalRules

        return RefusalRules(**options)
    from valind.judges.anthro import AnthroRules

    return AnthroRules(label, **options)
