"""UltraFeedback, in its two published forms.

``ultrafeedback`` (binarized, ``HuggingFaceH4/ultrafeedback_binarized``): ``prompt``,
``prompt_id``, ``chosen`` and ``rejected`` as chat message lists ending in the assistant reply,
``score_chosen``, ``score_rejected``. A pair with equal scores is a tie and is dropped.

``ultrafeedback_raw`` (``openbmb/UltraFeedback``): ``instruction`` and ``completions``, each with
``response`` and ``annotations`` (aspect -> {"Rating": "1".."5" or "N/A", ...}). The rule:

- a completion's score is the mean of its numeric aspect ratings (completions with none are skipped);
- chosen is the completion with the highest mean; if two or more share it, the record is a tie and is dropped;
- rejected is drawn uniformly from the completions with a strictly lower mean (``rejected: random``,
  default, as in the binarized release) or is the lowest-scored one (``rejected: lowest``).
  The draw uses ``random.Random(f"{seed}:{instruction}")``, so it does not depend on file order.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from valind.ingest.adapters.base import (
    Reason, RowAdapter, RowRejected, as_messages, get, get_number, get_str, split_final_assistant,
)
from valind.schema import Pair, user


class UltraFeedbackBinarized(RowAdapter):
    name = "ultrafeedback"
    hub_names = ("HuggingFaceH4/ultrafeedback_binarized",)

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return isinstance(record.get("chosen"), list) and "score_chosen" in record

    def build(self, record: dict[str, Any]) -> Pair:
        chosen_prompt, chosen = split_final_assistant(as_messages(get(record, "chosen"), "chosen"), "chosen")
        rejected_prompt, rejected = split_final_assistant(as_messages(get(record, "rejected"), "rejected"), "rejected")
        if chosen_prompt != rejected_prompt:
            raise RowRejected(Reason.TRANSCRIPT_MISMATCH, "rejected", "chosen and rejected conversations differ before the final reply")
        score_chosen, score_rejected = get_number(record, "score_chosen"), get_number(record, "score_rejected")
        if score_chosen == score_rejected:
            raise RowRejected(Reason.TIE, "score_chosen", f"chosen and rejected have the same score ({score_chosen:g})")
        if score_chosen < score_rejected:
            raise RowRejected(Reason.INVALID_VALUE, "score_chosen", f"lower than score_rejected ({score_chosen:g} < {score_rejected:g})")
        meta = {"score_chosen": score_chosen, "score_rejected": score_rejected}
        if isinstance(record.get("prompt_id"), str):
            meta["prompt_id"] = record["prompt_id"]
        return Pair(chosen_prompt, chosen, rejected, meta)


class RejectedRule(StrEnum):
    RANDOM = "random"
    LOWEST = "lowest"


class RawOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rejected: RejectedRule = Field(RejectedRule.RANDOM, description="How rejected is picked among lower-rated completions.")
    seed: int = Field(0, description="Seed of the rejected draw (combined with the instruction text).")


def mean_rating(completion: Any, index: int) -> float | None:
    """Mean of the numeric ``Rating`` values of a completion's annotations; None if it has none."""
    annotations = completion.get("annotations") if isinstance(completion, dict) else None
    if not isinstance(annotations, dict):
        raise RowRejected(Reason.MISSING_FIELD, f"completions[{index}].annotations", "missing or not an object")
    ratings = []
    for aspect in annotations.values():
        rating = aspect.get("Rating") if isinstance(aspect, dict) else None
        try:
            ratings.append(float(rating))
        except (TypeError, ValueError):
            continue  # "N/A" and absent ratings carry no score
    return sum(ratings) / len(ratings) if ratings else None


class UltraFeedbackRaw(RowAdapter):
    name = "ultrafeedback_raw"
    Options = RawOptions
    hub_names = ("openbmb/UltraFeedback",)

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return "instruction" in record and isinstance(record.get("completions"), list)

    def build(self, record: dict[str, Any]) -> Pair:
        instruction = get_str(record, "instruction")
        completions = get(record, "completions")
        if not isinstance(completions, list):
            raise RowRejected(Reason.WRONG_TYPE, "completions", f"expected a list, got {type(completions).__name__}")
        scored = []
        for i, c in enumerate(completions):
            score = mean_rating(c, i)
            if score is not None:
                scored.append((score, i, get_str(c, "response")))
        if len(scored) < 2:
            raise RowRejected(Reason.MISSING_FIELD, "completions", f"needs two rated completions, found {len(scored)}")
        top = max(s for s, _, _ in scored)
        best = [c for c in scored if c[0] == top]
        if len(best) > 1:
            raise RowRejected(Reason.TIE, "completions", f"{len(best)} completions share the top mean rating {top:g}")
        lower = [c for c in scored if c[0] < top]
        if self.options.rejected is RejectedRule.LOWEST:
            worst = min(s for s, _, _ in lower)
            rejected = min(c for c in lower if c[0] == worst)
        else:
            rejected = random.Random(f"{self.options.seed}:{instruction}").choice(lower)
        chosen = best[0]

        def model(i: int) -> Any:
            c = completions[i]
            return c.get("model") if isinstance(c, dict) else None

        meta = {
            "chosen_mean_rating": chosen[0], "rejected_mean_rating": rejected[0],
            "chosen_model": model(chosen[1]), "rejected_model": model(rejected[1]),
        }
        if isinstance(record.get("source"), str):
            meta["origin"] = record["source"]
        return Pair([user(instruction)], chosen[2], rejected[2], meta)
