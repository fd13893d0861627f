"""Anthropic HH-RLHF (``Anthropic/hh-rlhf``).

Each record is ``{"chosen": transcript, "rejected": transcript}``; a transcript reads
``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: <final reply>"``.
Both transcripts are split at their last ``Assistant:`` turn: the part before it becomes the
prompt messages (Human -> user, Assistant -> assistant), the part after it the reply.
A pair whose two transcripts differ before that point is rejected (``transcript_mismatch``):
it would not be a preference between two replies to the same conversation.
"""

from __future__ import annotations

import re
from typing import Any

from valind.ingest.adapters.base import Reason, RowAdapter, RowRejected, get_str
from valind.schema import Message, Pair

_LAST = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def split_transcript(text: str, field: str) -> tuple[str, str]:
    """(everything before the last Assistant turn, the final reply text)."""
    cut = text.rfind(_LAST)
    if cut < 0:
        raise RowRejected(Reason.MALFORMED_TRANSCRIPT, field, "no '\\n\\nAssistant:' turn in the transcript")
    return text[:cut], text[cut + len(_LAST):]


def parse_turns(prefix: str, field: str) -> list[Message]:
    """Parse ``\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c`` into chat messages."""
    parts = _TURN.split(prefix)
    if parts[0].strip() or len(parts) < 3:
        raise RowRejected(Reason.MALFORMED_TRANSCRIPT, field, "transcript must start with '\\n\\nHuman:'")
    messages = [{"role": _ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if messages[-1]["role"] != "user":
        raise RowRejected(Reason.MALFORMED_TRANSCRIPT, field, "the turn before the final reply is not a Human turn")
    return messages


class HHRLHF(RowAdapter):
    name = "hh_rlhf"
    hub_names = ("Anthropic/hh-rlhf",)

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        chosen = record.get("chosen")
        return isinstance(chosen, str) and "\n\nAssistant:" in chosen and "\n\nHuman:" in chosen

    def build(self, record: dict[str, Any]) -> Pair:
        chosen_prefix, chosen = split_transcript(get_str(record, "chosen"), "chosen")
        rejected_prefix, rejected = split_transcript(get_str(record, "rejected"), "rejected")
        if chosen_prefix != rejected_prefix:
            raise RowRejected(
                Reason.TRANSCRIPT_MISMATCH, "rejected",
                "chosen and rejected transcripts differ before the final Assistant turn",
            )
        return Pair(parse_turns(chosen_prefix, "chosen"), chosen, rejected, {})
