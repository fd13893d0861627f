"""PKU-SafeRLHF (``PKU-Alignment/PKU-SafeRLHF``).

Fields: ``prompt``, ``response_0``, ``response_1``, ``better_response_id``, ``safer_response_id``,
``is_response_{0,1}_safe``, ``response_{0,1}_harm_category`` (category -> bool),
``response_{0,1}_severity_level``. The option ``preference`` picks which label defines chosen:
``better`` (helpfulness, default) or ``safer``. The safety fields of both responses go to
``meta`` under chosen_* / rejected_*.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from valind.ingest.adapters.base import Reason, RowAdapter, RowRejected, get, get_bool, get_int, get_str
from valind.schema import Pair, user


class Preference(StrEnum):
    BETTER = "better"
    SAFER = "safer"


class PKUOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preference: Preference = Field(
        Preference.BETTER, description="Which label defines chosen: 'better' (helpfulness) or 'safer'."
    )


def _harm_categories(record: dict[str, Any], i: int) -> list[str]:
    cats = record.get(f"response_{i}_harm_category")
    if isinstance(cats, dict):
        return sorted(k for k, v in cats.items() if v)
    return []


class PKUSafeRLHF(RowAdapter):
    name = "pku_saferlhf"
    Options = PKUOptions
    hub_names = ("PKU-Alignment/PKU-SafeRLHF",)

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return "response_0" in record and "response_1" in record and "safer_response_id" in record

    def build(self, record: dict[str, Any]) -> Pair:
        prompt = get_str(record, "prompt")
        responses = (get_str(record, "response_0"), get_str(record, "response_1"))
        key = "better_response_id" if self.options.preference is Preference.BETTER else "safer_response_id"
        best = get_int(record, key)
        if best not in (0, 1):
            raise RowRejected(Reason.INVALID_VALUE, key, f"must be 0 or 1, got {best}")
        other = 1 - best
        meta: dict[str, Any] = {"preference": self.options.preference.value}
        other_key = "safer_response_id" if key == "better_response_id" else "better_response_id"
        if get(record, other_key) is not None:
            meta[f"chosen_is_{'safer' if key == 'better_response_id' else 'better'}"] = get_int(record, other_key) == best
        for side, i in (("chosen", best), ("rejected", other)):
            if f"is_response_{i}_safe" in record:
                meta[f"{side}_is_safe"] = get_bool(record, f"is_response_{i}_safe")
            meta[f"{side}_harm_categories"] = _harm_categories(record, i)
            if record.get(f"response_{i}_severity_level") is not None:
                meta[f"{side}_severity_level"] = get_int(record, f"response_{i}_severity_level")
        return Pair([user(prompt)], responses[best], responses[other], meta)
