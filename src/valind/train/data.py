"""The training rows of one cell, built from the value's subset file.

A subset file (``subsets/<value>.parquet``, written by the subsets stage) holds TRL's
conversational preference rows::

    {"prompt": [{"role": "user", "content": "My cat died."}],
     "chosen": [{"role": "assistant", "content": "I'm so sorry ..."}],
     "rejected": [{"role": "assistant", "content": "Cats die."}],
     "pair_id": "3f2a...", "source": "hh-rlhf", "flipped": false}

- DPO rows keep prompt / chosen / rejected (+ pair_id). With a system prompt (``dpo+system``) the
  value's system message goes first in every prompt; a prompt that already starts with a system
  message gets the value's prompt in front of its text (chat templates take one system message).
- SFT rows are TRL prompt-completion rows: ``{"prompt": [...], "completion": chosen}``, so the loss
  covers the response only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from valind.errors import ConfigError, InputError

Message = dict[str, str]
REQUIRED_COLUMNS = ("prompt", "chosen", "rejected", "pair_id")


def read_subset(path: Path, max_pairs: int | None = None) -> list[dict[str, Any]]:
    """The pairs of a subset file as plain rows (the first ``max_pairs`` by pair_id when set)."""
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the subset file ({err})", file=str(path)) from None
    absent = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if absent:
        raise InputError(f"missing column {absent[0]!r}; a subset file has {', '.join(REQUIRED_COLUMNS)}", file=str(path))
    if table.num_rows == 0:
        raise ConfigError(f"{path}: the subset is empty (0 pairs); drop the value from train.values or rebuild the subsets")
    table = table.sort_by("pair_id")
    if max_pairs is not None:
        table = table.slice(0, max_pairs)
    return table.select(list(REQUIRED_COLUMNS)).to_pylist()


def with_system_prompt(prompt: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """``prompt`` with the value's system message first (merged into an existing leading system message)."""
    messages = [dict(m) for m in prompt]
    if system_prompt is None:
        return messages
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{system_prompt}\n\n{messages[0]['content']}"
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def dpo_rows(pairs: Sequence[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    return [
        {"prompt": with_system_prompt(p["prompt"], system_prompt), "chosen": p["chosen"], "rejected": p["rejected"], "pair_id": p["pair_id"]}
        for p in pairs
    ]


def sft_rows(pairs: Sequence[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    return [{"prompt": with_system_prompt(p["prompt"], system_prompt), "completion": p["chosen"]} for p in pairs]


def mean_sequence_tokens(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int, sample: int = 512) -> float:
    """Mean tokens of prompt + response (chosen and rejected), cut at ``max_length``, over the first ``sample`` rows."""
    lengths = []
    for row in rows[:sample]:
        for side in ("chosen", "rejected"):
            ids = tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=False)
            lengths.append(min(len(ids), max_length))
    return sum(lengths) / len(lengths) if lengths else 0.0
