"""HelpSteer2 (``nvidia/HelpSteer2``), in its two files.

``helpsteer2`` (the preference file, Hub ``data_dir: preference``): ``prompt``, ``response_1``,
``response_2``, ``preference_strength`` in -3..3; negative means response_1 is better, positive
response_2; 0 (no preference) is dropped and counted as ``no_preference``.

``helpsteer2_regular`` (the regular file): one row per response with ``prompt``, ``response`` and
attribute scores (``helpfulness`` 0-4, ``correctness``, ``coherence``, ``complexity``, ``verbosity``).
The file lists the two responses to a prompt on consecutive rows; each such group of two becomes
a pair with chosen = higher helpfulness. Equal helpfulness is a tie (dropped); a prompt that does not
come as exactly two consecutive rows is dropped as ``unpaired`` (both counted in rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any

from valind.ingest.adapters.base import (
    Built, NoOptions, Reason, Reject, Row, RowAdapter, RowRejected, get_int, get_str,
)
from valind.schema import Pair, user

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


class HelpSteer2Preference(RowAdapter):
    name = "helpsteer2"
    hub_names = ("nvidia/HelpSteer2",)

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return "preference_strength" in record and "response_1" in record

    def build(self, record: dict[str, Any]) -> Pair:
        prompt = get_str(record, "prompt")
        r1, r2 = get_str(record, "response_1"), get_str(record, "response_2")
        strength = get_int(record, "preference_strength")
        if not -3 <= strength <= 3:
            raise RowRejected(Reason.INVALID_VALUE, "preference_strength", f"must be in -3..3, got {strength}")
        if strength == 0:
            raise RowRejected(Reason.NO_PREFERENCE, "preference_strength", "0 means neither response is preferred")
        chosen, rejected = (r1, r2) if strength < 0 else (r2, r1)
        meta = {"preference_strength": abs(strength), "chosen_response": 1 if strength < 0 else 2}
        return Pair([user(prompt)], chosen, rejected, meta)


class HelpSteer2Regular:
    name = "helpsteer2_regular"
    Options = NoOptions
    hub_names = ()

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return "helpfulness" in record and "response" in record and "prompt" in record

    def convert(self, rows: Iterable[Row]) -> Iterator[Built | Reject]:
        for _, group_iter in groupby(rows, key=lambda row: row.record.get("prompt")):
            group = list(group_iter)
            try:
                yield self._pair(group)
            except RowRejected as r:
                yield Reject(group[0].number, r.reason, r.field, r.detail, rows=len(group))

    @staticmethod
    def _pair(group: list[Row]) -> Built:
        first = group[0].record
        prompt = get_str(first, "prompt")
        if len(group) != 2:
            raise RowRejected(Reason.UNPAIRED, "prompt", f"{len(group)} consecutive row(s) with this prompt; need exactly 2")
        a, b = (g.record for g in group)
        ha, hb = get_int(a, "helpfulness"), get_int(b, "helpfulness")
        if ha == hb:
            raise RowRejected(Reason.TIE, "helpfulness", f"both responses have helpfulness {ha}")
        chosen, rejected = (a, b) if ha > hb else (b, a)
        meta = {
            f"{side}_{attr}": get_int(rec, attr)  # ints in JSONL / Parquet, digit strings in CSV
            for side, rec in (("chosen", chosen), ("rejected", rejected))
            for attr in ATTRIBUTES
            if rec.get(attr) not in (None, "")
        }
        return Built(group[0].number, Pair([user(prompt)], get_str(chosen, "response"), get_str(rejected, "response"), meta))
