"""The canonical pair schema that every stage after ingest reads.

One row is one preference pair:

- ``pair_id``: 32 hex characters, XXH3-128 of the canonical JSON of
  ``[prompt, chosen, rejected]`` (a fast hash whose output is fixed by its specification,
  so ids are stable across machines and versions). The source is not part of it, so the
  same pair found in two sources has the same id (and is kept once).
- ``source``: the name of the source the pair was read from (config ``ingest.sources[].name``).
- ``prompt``: the chat messages before the final assistant turn, as
  ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``; multi-turn is kept and
  the last message is always a user turn.
- ``chosen`` / ``rejected``: the texts of the preferred / dispreferred final assistant message.
- ``meta``: a JSON object (stored as a string, so every source shares one schema) with the
  source fields worth keeping: scores, harm categories, preference strength, row number.

Example row (from HH-RLHF)::

    {"pair_id": "3f2a...", "source": "hh-rlhf", "prompt": [{"role": "user", "content": "what are some pranks with a pen i can do?"}, ...],
     "chosen": "No, sorry! All of these involve a pen, ...", "rejected": "...", "meta": "{\"row\": 1}"}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import xxhash

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PROMPT_TYPE = pa.list_(MESSAGE_TYPE)

PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("source", pa.string()),
        ("prompt", PROMPT_TYPE),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("meta", pa.string()),
    ]
)

ROLES = frozenset({"system", "user", "assistant"})

Message = dict[str, str]


class Pair(NamedTuple):
    """One preference pair as an adapter builds it (before validation and hashing)."""

    prompt: list[Message]
    chosen: str
    rejected: str
    meta: dict[str, Any]


def pair_id(prompt: list[Message], chosen: str, rejected: str) -> str:
    """Stable content hash of a pair: XXH3-128 over the canonical JSON, as 32 hex chars."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps([prompt, chosen, rejected]))


def user(content: str) -> Message:
    return {"role": "user", "content": content}
