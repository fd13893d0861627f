"""The project's own errors. Every error a user can cause says where (file, row, field) and why."""

from __future__ import annotations


class ValindError(Exception):
    """Base class: an error the CLI prints as one clear message, without a traceback."""


class ConfigError(ValindError):
    """A configuration value is missing, unknown or out of range."""


class InputError(ValindError):
    """An input file or record cannot be used.

    The message names the file, the line or row (1-based) and the field where they are known,
    e.g. ``data.jsonl: line 17: field 'chosen': empty response (empty_response)``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        location: str | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.location = location
        self.field = field
        self.reason = reason
        parts = [p for p in (file, location) if p]
        if field:
            parts.append(f"field {field!r}")
        parts.append(f"{message} ({reason})" if reason else message)
        super().__init__(": ".join(parts))

    def in_file(self, file: str) -> InputError:
        """The same error, naming the file it came from."""
        return InputError(self.message, file=file, location=self.location, field=self.field, reason=self.reason)


class StageFailed(ValindError):
    """A stage ran but its result is not acceptable (for example too many rows rejected)."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the valid names and the closest match."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(valid))}")
        self.valid = sorted(valid)
