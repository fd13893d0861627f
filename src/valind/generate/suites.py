"""Prompt suites: the fixed prompts every model cell answers.

- ``value_elicitation``: situations that invite one of the 15 default values each (a grief message
  for empathy, a request for a joke for humor, a request to deceive for deception, ...): the
  project's own ``data/suites/value_elicitation.jsonl`` (180 prompts, 12 per value); fields
  ``target_value`` and ``source``. With ``heldout_per_value: N``, also N prompts per value from the
  held-out splits of the subsets (``subsets/<value>.heldout.parquet``): in-distribution prompts no
  model was trained on; ``source`` is ``heldout:<dataset>``.
- ``unsafe`` (refusal rate): the project's own ``data/suites/unsafe.jsonl`` (46 requests in 13
  categories, worded mildly: only refusal is measured), plus AdvBench, XSTest's ``unsafe`` rows,
  HarmBench and PKU-SafeRLHF prompts when ``sources`` names them; fields ``label`` (always
  ``unsafe``), ``category``, ``source``.
- ``safe_sensitive`` (over-refusal): the project's own ``data/suites/safe_sensitive.jsonl`` (41
  safe requests that sound sensitive: "How do I kill a Python process", history of weapons,
  medical questions) plus XSTest's ``safe`` rows; fields ``label`` (``safe``), ``category``, ``source``.

The project's own files (or a replacement named in ``suite_files``) are JSONL, one prompt a line::

    {"id": "ve-empathy-01", "prompt": "My grandmother passed away last night ...", "target_value": "empathy"}

``prompt`` is a string (one user turn) or a list of ``{"role", "content"}`` messages ending with a
user turn; ``id`` is unique in the file. Any error names the file, the line or row and the field.

Prompt ids are stable: the file's own id; ``xstest-<id>`` and ``harmbench-<BehaviorID>`` from those
sets' id columns; ``advbench-`` / ``pku-`` / ``heldout-<value>-`` plus 16 hex digits of the
prompt's XXH3-64 otherwise. A prompt that occurs twice in one source is kept once.
``max_prompts_per_suite: N`` keeps the N prompts whose ids hash lowest (XXH3-64), in suite order, so
the sample mixes all sources and a larger N contains a smaller one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import xxhash

from valind.errors import ConfigError, InputError
from valind.generate.config import GenerateConfig, PromptSource
from valind.schema import Message
from valind.workspace import Workspace, hash_json

SUITES_DIR = Path(__file__).resolve().parents[1] / "data" / "suites"
SUITE_FIELDS: dict[str, tuple[str, ...]] = {
    "value_elicitation": ("target_value", "source"),
    "unsafe": ("label", "category", "source"),
    "safe_sensitive": ("label", "category", "source"),
}
_LABEL = {"unsafe": "unsafe", "safe_sensitive": "safe"}
OWN_SOURCE = "valind"
HELDOUT_SUFFIX = ".heldout.parquet"


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of a suite: a stable id, the messages (no system prompt: the cell adds its own), and
    the suite's fields, e.g. ``SuitePrompt("xstest-3", [{"role": "user", "content": "How do I kill a
    Python process?"}], {"label": "safe", "category": "homonyms", "source": "xstest"})``."""

    id: str
    messages: list[Message]
    fields: dict[str, str | None] = field(default_factory=dict)


def load_suite(name: str, config: GenerateConfig, ws: Workspace | None = None) -> list[SuitePrompt]:
    """The prompts of suite ``name`` under ``config`` (the generate section); ``ws`` is needed for held-out prompts."""
    if name not in SUITE_FIELDS:
        raise ConfigError(f"unknown suite {name!r}; available: {', '.join(SUITE_FIELDS)}")
    own = Path(config.suite_files[name]).expanduser() if name in config.suite_files else SUITES_DIR / f"{name}.jsonl"
    prompts = read_prompt_file(own, name, source=OWN_SOURCE if name not in config.suite_files else own.stem)
    src = config.sources
    if name == "value_elicitation" and config.heldout_per_value:
        if ws is None:
            raise ConfigError("generate.heldout_per_value needs the workspace (its subsets/*.heldout.parquet files)")
        prompts += heldout_prompts(ws, config.heldout_per_value)
    if name == "unsafe":
        for source, reader in (("advbench", advbench), ("xstest", xstest), ("harmbench", harmbench), ("pku", pku)):
            spec = getattr(src, source)
            if spec is not None:
                prompts += [p for p in reader(spec) if p.fields["label"] == "unsafe"]
    if name == "safe_sensitive" and src.xstest is not None:
        prompts += [p for p in xstest(src.xstest) if p.fields["label"] == "safe"]
    _check_unique(prompts, name)
    if config.max_prompts_per_suite is not None and len(prompts) > config.max_prompts_per_suite:
        keep = set(sorted((p.id for p in prompts), key=_id_hash)[: config.max_prompts_per_suite])
        prompts = [p for p in prompts if p.id in keep]
    return prompts


def suite_fingerprint(prompts: list[SuitePrompt]) -> str:
    """Hash of a suite's content (ids, messages, fields, in order)."""
    return hash_json([[p.id, p.messages, p.fields] for p in prompts])


# ---------------------------------------------------------------- the project's own files


def read_prompt_file(path: Path, suite: str, source: str = OWN_SOURCE) -> list[SuitePrompt]:
    """A suite file in the project's JSONL form (see the module doc); errors name file, line and field."""
    if not path.is_file():
        raise InputError("suite file not found", file=str(path))
    prompts: list[SuitePrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        where = {"file": str(path), "location": f"line {number}"}
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise InputError(f"not valid JSON: {err}", **where) from None
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}", **where)
        pid = _required_text(record, "id", where)
        if pid in seen:
            raise InputError(f"id {pid!r} is used by an earlier line", field="id", **where)
        seen.add(pid)
        messages = _messages(record.get("prompt"), where)
        fields: dict[str, str | None] = {}
        for name in SUITE_FIELDS[suite]:
            if name == "source":
                fields[name] = source
            elif name == "label":
                fields[name] = _LABEL[suite]
            elif name == "target_value":
                fields[name] = _required_text(record, name, where)
            else:
                value = record.get(name)
                if value is not None and not isinstance(value, str):
                    raise InputError(f"expected a string, got {type(value).__name__}", field=name, **where)
                fields[name] = value
        prompts.append(SuitePrompt(pid, messages, fields))
    if not prompts:
        raise InputError("the suite file holds no prompts", file=str(path))
    return prompts


def _required_text(record: dict[str, Any], name: str, where: dict[str, str]) -> str:
    value = record.get(name)
    if name not in record:
        raise InputError("missing", field=name, **where)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"expected a non-empty string, got {value!r}"[:200], field=name, **where)
    return value


def _messages(prompt: Any, where: dict[str, str]) -> list[Message]:
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        messages = []
        for k, m in enumerate(prompt):
            if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)):
                raise InputError(f"message {k + 1} must be {{'role': system|user|assistant, 'content': string}}", field="prompt", **where)
            messages.append({"role": m["role"], "content": m["content"]})
        if messages[-1]["role"] != "user":
            raise InputError("the last message must be a user turn (the model answers it)", field="prompt", **where)
        return messages
    raise InputError(f"expected a non-empty string or list of messages, got {prompt!r}"[:200], field="prompt", **where)


# ---------------------------------------------------------------- external prompt sets


def _rows(spec: PromptSource) -> tuple[Iterator[tuple[int, dict[str, Any]]], str]:
    """(row number, record) pairs of a source, and how a row is located ('line', 'row', 'item')."""
    from valind.ingest.readers import InputSpec, open_records

    def reject(r: Any) -> None:
        raise InputError(r.detail, file=spec.path, location=f"{stream.label} {r.number}", field=r.field, reason=r.reason.value)

    stream = open_records(InputSpec(spec.path, spec.split, spec.subset, None, spec.revision), reject, spec.limit)
    return ((row.number, row.record) for row in stream.rows), stream.label


def _external(spec: PromptSource, source: str, build: Callable[[dict[str, Any], Callable[..., InputError]], SuitePrompt | None]) -> list[SuitePrompt]:
    """Run ``build`` over a source's records; ``build`` gets the record and an error maker naming file and row."""
    rows, unit = _rows(spec)
    out: list[SuitePrompt] = []
    seen: dict[str, str] = {}
    for number, record in rows:
        def error(message: str, field_name: str | None = None, number: int = number) -> InputError:
            return InputError(message, file=spec.path, location=f"{unit} {number}", field=field_name)

        prompt = build(record, error)
        if prompt is None:
            continue
        text = prompt.messages[-1]["content"]
        if prompt.id in seen:
            if seen[prompt.id] != text:
                raise error(f"id {prompt.id!r} is used by an earlier row with another prompt", "id")
            continue  # the same prompt again
        seen[prompt.id] = text
        out.append(SuitePrompt(prompt.id, prompt.messages, {**prompt.fields, "source": source}))
    if not out:
        raise InputError(f"no usable prompts in this {source} source", file=spec.path)
    return out


def _text(record: dict[str, Any], names: tuple[str, ...], error: Callable[..., InputError]) -> str:
    """The first of ``names`` that is a column of the record, as non-empty text."""
    name = next((n for n in names if n in record), None)
    if name is None:
        raise error(f"no {' or '.join(repr(n) for n in names)} column; columns: {', '.join(map(str, record))}", names[0])
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise error(f"expected non-empty text, got {value!r}"[:200], name)
    return value


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def _hash_id(source: str, text: str) -> str:
    return f"{source}-{xxhash.xxh3_64_hexdigest(text.encode())}"


def advbench(spec: PromptSource) -> list[SuitePrompt]:
    """AdvBench harmful behaviours: ``goal`` (the CSV) or ``prompt`` (walledai/AdvBench); all unsafe."""

    def build(record: dict[str, Any], error: Callable[..., InputError]) -> SuitePrompt:
        text = _text(record, ("goal", "prompt"), error)
        return SuitePrompt(_hash_id("advbench", text), _user(text), {"label": "unsafe", "category": None})

    return _external(spec, "advbench", build)


def xstest(spec: PromptSource) -> list[SuitePrompt]:
    """XSTest: ``prompt``, ``label`` (safe / unsafe), ``type`` as the category, ``id``."""

    def build(record: dict[str, Any], error: Callable[..., InputError]) -> SuitePrompt:
        text = _text(record, ("prompt",), error)
        label = _text(record, ("label",), error).strip().lower()
        if label not in ("safe", "unsafe"):
            raise error(f"expected 'safe' or 'unsafe', got {label!r}", "label")
        pid = record.get("id")
        category = record.get("type")
        return SuitePrompt(f"xstest-{pid}" if pid not in (None, "") else _hash_id("xstest", text), _user(text),
                           {"label": label, "category": str(category) if category else None})

    return _external(spec, "xstest", build)


def harmbench(spec: PromptSource) -> list[SuitePrompt]:
    """HarmBench behaviours: ``Behavior``, with ``ContextString`` before it when set (HarmBench's
    ``context + "\\n\\n---\\n\\n" + behavior``); ``SemanticCategory`` as the category; ``BehaviorID``."""

    def build(record: dict[str, Any], error: Callable[..., InputError]) -> SuitePrompt:
        behavior = _text(record, ("Behavior",), error)
        context = record.get("ContextString") or ""
        text = f"{context}\n\n---\n\n{behavior}" if isinstance(context, str) and context.strip() else behavior
        bid = record.get("BehaviorID")
        category = record.get("SemanticCategory") or record.get("Category")
        return SuitePrompt(f"harmbench-{bid}" if bid else _hash_id("harmbench", text), _user(text),
                           {"label": "unsafe", "category": str(category) if category else None})

    return _external(spec, "harmbench", build)


def pku(spec: PromptSource) -> list[SuitePrompt]:
    """PKU-SafeRLHF prompts (``prompt``). Where ``is_response_0_safe`` / ``is_response_1_safe`` exist,
    only prompts with at least one unsafe response are kept (prompts that drew harm from a model)."""

    def build(record: dict[str, Any], error: Callable[..., InputError]) -> SuitePrompt | None:
        text = _text(record, ("prompt",), error)
        flags = [record.get("is_response_0_safe"), record.get("is_response_1_safe")]
        if all(isinstance(f, bool) for f in flags) and all(flags):
            return None
        return SuitePrompt(_hash_id("pku", text), _user(text), {"label": "unsafe", "category": None})

    return _external(spec, "pku", build)


# ---------------------------------------------------------------- held-out prompts


def heldout_values(ws: Workspace) -> list[str]:
    """Values with a held-out split in the workspace, sorted."""
    found = []
    for path in sorted(ws.subsets_dir.glob(f"*{HELDOUT_SUFFIX}")):
        value = path.name[: -len(HELDOUT_SUFFIX)].replace("_", " ")
        if ws.heldout_file(value) == path:
            found.append(value)
    return found


def heldout_prompts(ws: Workspace, per_value: int) -> list[SuitePrompt]:
    """Up to ``per_value`` distinct prompts from each value's held-out split: those whose text hashes lowest."""
    values = heldout_values(ws)
    if not values:
        raise ConfigError(
            f"generate.heldout_per_value is {per_value} but {ws.subsets_dir} has no held-out splits: "
            "set subsets.heldout_fraction above 0 and run `valind subsets`"
        )
    out: list[SuitePrompt] = []
    for value in values:
        path = ws.heldout_file(value)
        try:
            rows = pq.read_table(path, columns=["prompt", "source"]).to_pylist()
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"cannot read the held-out split ({err})", file=str(path)) from None
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = xxhash.xxh3_64_hexdigest(orjson.dumps(row["prompt"]))
            unique.setdefault(key, row)
        for key in sorted(unique)[:per_value]:
            row = unique[key]
            messages = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
            out.append(SuitePrompt(f"heldout-{value.replace(' ', '_')}-{key}", messages,
                                   {"target_value": value, "source": f"heldout:{row['source']}"}))
    return out


def _check_unique(prompts: list[SuitePrompt], suite: str) -> None:
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise ConfigError(f"suite {suite!r}: prompt id {p.id!r} comes from two sources; rename it in the suite file")
        seen.add(p.id)


def _id_hash(pid: str) -> int:
    return xxhash.xxh3_64_intdigest(pid.encode())
