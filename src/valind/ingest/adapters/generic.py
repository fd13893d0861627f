"""Any preference table, through a column mapping.

Options name the columns: ``prompt`` (a string, or a chat message list), ``chosen`` and
``rejected`` (strings, or message lists ending in the assistant reply, in which case the
conversation before the reply is the prompt when no ``prompt`` column is given), an optional
``system`` column (a system message put first), and ``meta``: columns copied into ``meta``.

Example (a JSONL file with question / good / bad fields)::

    options: {prompt: question, chosen: good, rejected: bad, meta: [topic]}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from valind.ingest.adapters.base import (
    Reason, RowAdapter, RowRejected, as_messages, get, split_final_assistant,
)
from valind.schema import Message, Pair, user


class GenericOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field("prompt", description="Prompt column (string or message list); null: taken from chosen's conversation.")
    chosen: str = Field("chosen", description="Chosen column (string or message list ending in the reply).")
    rejected: str = Field("rejected", description="Rejected column (string or message list ending in the reply).")
    system: str | None = Field(None, description="Optional column with a system prompt.")
    meta: list[str] = Field(default_factory=list, description="Columns copied into meta as they are.")


def _reply(record: dict[str, Any], column: str) -> tuple[list[Message] | None, str]:
    value = get(record, column)
    if type(value) is str:
        return None, value
    if isinstance(value, list):
        return split_final_assistant(as_messages(value, column), column)
    raise RowRejected(Reason.WRONG_TYPE, column, f"expected a string or a message list, got {type(value).__name__}")


class Generic(RowAdapter):
    name = "generic"
    Options = GenericOptions

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        return "chosen" in record and "rejected" in record and "prompt" in record

    def __init__(self, options: GenericOptions) -> None:
        super().__init__(options)
        # the common case (three string columns, nothing else to copy) skips the general path
        self._simple = options.prompt is not None and not options.system and not options.meta

    def build(self, record: dict[str, Any]) -> Pair:
        opts = self.options
        if self._simple:
            prompt, chosen, rejected = record.get(opts.prompt), record.get(opts.chosen), record.get(opts.rejected)
            if type(prompt) is str and type(chosen) is str and type(rejected) is str:
                return Pair([{"role": "user", "content": prompt}], chosen, rejected, {})
        chosen_context, chosen = _reply(record, opts.chosen)
        rejected_context, rejected = _reply(record, opts.rejected)
        if opts.prompt is not None and opts.prompt in record:
            raw = get(record, opts.prompt)
            prompt = [user(raw)] if type(raw) is str else as_messages(raw, opts.prompt)
        elif chosen_context is not None:
            if rejected_context is not None and rejected_context != chosen_context:
                raise RowRejected(Reason.TRANSCRIPT_MISMATCH, opts.rejected, "chosen and rejected conversations differ before the final reply")
            prompt = chosen_context
        else:
            field = opts.prompt or opts.chosen
            raise RowRejected(Reason.MISSING_FIELD, field, "required field is missing")
        if opts.system and record.get(opts.system):
            system = record[opts.system]
            if type(system) is not str:
                raise RowRejected(Reason.WRONG_TYPE, opts.system, f"expected a string, got {type(system).__name__}")
            prompt = [{"role": "system", "content": system}, *prompt]
        meta = {name: record[name] for name in opts.meta if name in record}
        return Pair(prompt, chosen, rejected, meta)
