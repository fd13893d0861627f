"""What every dataset adapter shares: the records it reads, the results it yields, field helpers.

An adapter turns the records of one source schema into canonical pairs (valind.schema.Pair).
Most adapters map one record to one pair and subclass ``RowAdapter``; an adapter that
needs several records per pair (HelpSteer2's regular file) implements ``convert`` itself.
Checks every source needs (empty or identical responses, text size) are done once by
the ingest stage, not by each adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict

from valind.schema import ROLES, Message, Pair


class Reason(StrEnum):
    """Why a record was rejected; the keys of ``rejected`` in ingest_report.json."""

    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    NOT_AN_OBJECT = "not_an_object"
    MALFORMED_CSV = "malformed_csv"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    EMPTY_PROMPT = "empty_prompt"
    EMPTY_RESPONSE = "empty_response"
    IDENTICAL_RESPONSES = "identical_responses"
    TEXT_TOO_LONG = "text_too_long"
    MALFORMED_TRANSCRIPT = "malformed_transcript"
    TRANSCRIPT_MISMATCH = "transcript_mismatch"
    TIE = "tie"
    NO_PREFERENCE = "no_preference"
    UNPAIRED = "unpaired"


class Row(NamedTuple):
    """A parsed record and its 1-based line or row number in the input."""

    number: int
    record: dict[str, Any]


class Built(NamedTuple):
    """A pair an adapter built, with the number of the (first) record it came from."""

    number: int
    pair: Pair


class Reject(NamedTuple):
    """A record (or group of ``rows`` records) that did not become a pair, and why."""

    number: int
    reason: Reason
    field: str | None
    detail: str
    rows: int = 1


class RowRejected(Exception):
    """Raised inside an adapter's ``build`` to reject the current record."""

    def __init__(self, reason: Reason, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Adapter(Protocol):
    """A dataset adapter: records of one schema in, canonical pairs (or counted rejects) out."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    hub_names: ClassVar[tuple[str, ...]]

    def __init__(self, options: BaseModel) -> None: ...

    @classmethod
    def detect(cls, record: dict[str, Any]) -> bool:
        """True when a record has this adapter's schema (used by ``adapter: auto``)."""
        ...

    def convert(self, rows: Iterable[Row]) -> Iterator[Built | Reject]: ...


class RowAdapter:
    """Base for adapters that build one pair from one record."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    hub_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def build(self, record: dict[str, Any]) -> Pair:
        raise NotImplementedError

    def convert(self, rows: Iterable[Row]) -> Iterator[Built | Reject]:
        build = self.build
        for number, record in rows:
            try:
                yield Built(number, build(record))
            except RowRejected as r:
                yield Reject(number, r.reason, r.field, r.detail)


# ---------------------------------------------------------------- field helpers


def get(record: dict[str, Any], name: str) -> Any:
    """The value of a required field; missing or null is a rejection naming the field."""
    value = record.get(name)
    if value is None:
        detail = "is null" if name in record else "is missing"
        raise RowRejected(Reason.MISSING_FIELD, name, f"required field {detail}")
    return value


def get_str(record: dict[str, Any], name: str) -> str:
    value = get(record, name)
    if type(value) is not str:
        raise RowRejected(Reason.WRONG_TYPE, name, f"expected a string, got {type(value).__name__}")
    return value


def get_int(record: dict[str, Any], name: str) -> int:
    """An integer field; integral floats and numeric strings (CSV) are accepted."""
    value = get(record, name)
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise RowRejected(Reason.WRONG_TYPE, name, f"expected an integer, got {value!r:.60}")


def get_number(record: dict[str, Any], name: str) -> float:
    value = get(record, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise RowRejected(Reason.WRONG_TYPE, name, f"expected a number, got {value!r:.60}")


def get_bool(record: dict[str, Any], name: str) -> bool:
    value = get(record, name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise RowRejected(Reason.WRONG_TYPE, name, f"expected true or false, got {value!r:.60}")


def as_messages(value: Any, name: str) -> list[Message]:
    """Validate a chat message list ``[{"role": ..., "content": ...}, ...]`` and normalise it."""
    if not isinstance(value, list):
        raise RowRejected(Reason.WRONG_TYPE, name, f"expected a list of chat messages, got {type(value).__name__}")
    out: list[Message] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise RowRejected(Reason.WRONG_TYPE, f"{name}[{i}]", f"expected a message object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RowRejected(Reason.INVALID_VALUE, f"{name}[{i}].role", f"role must be one of {sorted(ROLES)}, got {role!r:.40}")
        if type(content) is not str:
            raise RowRejected(Reason.WRONG_TYPE, f"{name}[{i}].content", f"expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def split_final_assistant(messages: list[Message], name: str) -> tuple[list[Message], str]:
    """Split a conversation ending in an assistant turn into (prompt messages, final reply text)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise RowRejected(Reason.INVALID_VALUE, name, "conversation must end with an assistant message")
    return messages[:-1], messages[-1]["content"]
