"""Property tests: any record either becomes a pair or a counted rejection; any input file, model answer
or input line either parses or raises the project's own error (ValindError); nothing else escapes."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valind.errors import InputError, ValindError
from valind.extract.llm import CallFailed
from valind.extract.openai_backend import ChatClient
from valind.extract.prompting import Mode, parse_values, render
from valind.extract.prompting import ParseError as ValueParseError
from valind.extract.score import parse_line
from valind.ingest.adapters import ADAPTERS, make_adapter
from valind.ingest.adapters.base import Built, Reject, Row
from valind.ingest.readers import InputSpec, open_records
from valind.ingest.stage import check_pair
from valind.judges import Label
from valind.judges.llm import ParseError as JudgeParseError
from valind.judges.llm import parse_decision
from valind.judges.refusal import parse_wildguard
from valind.values import load_vocabulary

VOCAB = load_vocabulary()
SYSTEM = render(VOCAB, Mode.CLOSED, [], "")[0]["content"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]), "content": st.one_of(st.text(max_size=20), st.integers())})
transcript = st.lists(st.tuples(st.sampled_from(["Human", "Assistant", "Robot"]), st.text(max_size=20)), max_size=5).map(
    lambda turns: "".join(f"\n\n{who}: {text}" for who, text in turns)
)
FIELDS = ["prompt", "chosen", "rejected", "response_0", "response_1", "better_response_id", "safer_response_id",
          "score_chosen", "score_rejected", "instruction", "completions", "response_1", "response_2",
          "preference_strength", "response", "helpfulness"]
field_value = st.one_of(json_value, transcript, st.lists(message, max_size=4), st.sampled_from([0, 1, 2, -3, "1", "N/A"]))
record = st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record, min_size=1, max_size=4))
def test_every_adapter_returns_pairs_or_rejections(records: list[dict[str, Any]]) -> None:
    for name, cls in ADAPTERS.items():
        adapter = make_adapter(cls, {}, "fuzz")
        rows = [Row(i + 1, r) for i, r in enumerate(records)]
        accounted = 0
        for out in adapter.convert(rows):
            if type(out) is Reject:
                assert out.reason and out.detail, name
                accounted += out.rows
            else:
                assert type(out) is Built, name
                prompt, chosen, rejected, meta = out.pair
                assert isinstance(chosen, str) and isinstance(rejected, str) and isinstance(meta, dict), name
                assert all(m["role"] in {"user", "assistant", "system"} and isinstance(m["content"], str) for m in prompt), name
                check_pair(prompt, chosen.strip(), rejected.strip(), 1000)  # must not raise either
                accounted += 2 if name == "helpsteer2_regular" else 1
        assert accounted == len(records), name  # every record ends in exactly one place


# --- the generic adapter with every option, and texts from the whole of Unicode (surrogates aside: a
# reader never yields them), incl. control, zero-width and right-to-left characters

any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "q", "a", "b", "meta"]),
                                        st.one_of(any_text, json_value, st.lists(message, max_size=3)), max_size=6),
                        min_size=1, max_size=4),
       options=st.fixed_dictionaries({}, optional={"prompt": st.sampled_from(["prompt", "q"]),
                                                   "chosen": st.sampled_from(["chosen", "a"]),
                                                   "rejected": st.sampled_from(["rejected", "b"]),
                                                   "meta": st.lists(st.sampled_from(["meta", "q"]), max_size=2)}))
def test_generic_adapter_with_options_returns_pairs_or_rejections(records: list[dict[str, Any]], options: dict[str, Any]) -> None:
    try:
        adapter = make_adapter(ADAPTERS["generic"], options, "fuzz")
    except ValindError:
        return  # options refused with the project's own error
    outs = list(adapter.convert([Row(i + 1, r) for i, r in enumerate(records)]))
    assert sum(o.rows if type(o) is Reject else 1 for o in outs) == len(records)
    for out in outs:
        if type(out) is Built:
            prompt, chosen, rejected, meta = out.pair
            assert isinstance(chosen, str) and isinstance(rejected, str) and isinstance(meta, dict)
            orjson.dumps(meta)  # metadata must be storable


# --- readers: any bytes in any supported file kind end as records, counted rejections, or an InputError


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=400),
                      st.lists(st.one_of(st.binary(max_size=40), json_value.map(orjson.dumps)), max_size=6).map(b"\n".join)),
       suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".csv.gz"]),
       gz_valid=st.booleans())
def test_readers_never_crash_on_arbitrary_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str, gz_valid: bool) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"in{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") and gz_valid else data)
    rejects: list[Reject] = []
    try:
        stream = open_records(InputSpec(str(path)), rejects.append)
        rows = list(stream.rows)
    except InputError:
        return
    for row in rows:
        assert isinstance(row.record, dict)
    assert all(r.reason and r.detail for r in rejects)


def test_truncated_and_scribbled_parquet_inputs_are_input_errors(tmp_path: Path) -> None:
    table = pa.table({"prompt": [f"q{i}" for i in range(2000)], "chosen": ["a" * 50] * 2000, "rejected": ["b"] * 2000})
    good = tmp_path / "good.parquet"
    pq.write_table(table, good, row_group_size=300, compression="zstd")
    data = good.read_bytes()
    rng = random.Random(0)
    for trial in range(40):
        bad = bytearray(data)
        if trial % 2:
            bad = bad[: rng.randrange(len(bad))]
        else:
            start = rng.randrange(len(bad) - 64)
            bad[start:start + 64] = rng.randbytes(64)
        path = tmp_path / f"bad{trial}.parquet"
        path.write_bytes(bytes(bad))
        try:
            rows = list(open_records(InputSpec(str(path)), lambda r: None).rows)
        except InputError:
            continue
        assert all(isinstance(r.record, dict) for r in rows)  # damage in a spot pyarrow does not read


# --- parsers of model output and of input lines


model_answer = st.one_of(
    any_text,
    json_value.map(lambda v: orjson.dumps(v).decode()),
    st.builds(lambda pre, v, post: f"{pre}```json\n{orjson.dumps(v).decode()}\n```{post}", any_text, json_value, any_text),
    st.builds(lambda names, comma: '{"values": [' + ", ".join(orjson.dumps(n).decode() for n in names) + ("," if comma else "") + "]}",
              st.lists(any_text, max_size=4), st.booleans()),
    st.sampled_from(["[" * 3000, "{" * 3000, '{"values": ' * 500, '{"refusal": "yes"}', "Response refusal: n/a", "\x00"]),
)


@settings(max_examples=500, deadline=None)
@given(text=model_answer)
def test_value_parser_returns_strings_or_its_own_error(text: str) -> None:
    try:
        values = parse_values(text)
    except ValindError as err:
        assert isinstance(err, ValueParseError) and str(err)
        return
    assert isinstance(values, list) and all(isinstance(v, str) for v in values)


@settings(max_examples=500, deadline=None)
@given(text=model_answer, label=st.sampled_from(list(Label)))
def test_judge_parsers_return_a_decision_or_their_own_error(text: str, label: Label) -> None:
    for parse in (lambda t: parse_decision(t, label), parse_wildguard):
        try:
            decision = parse(text)
        except ValindError as err:
            assert isinstance(err, JudgeParseError) and str(err)
            continue
        assert isinstance(decision, bool)


json_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]),
                                      "content": st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1))})


@settings(max_examples=300, deadline=None)
@given(line=st.one_of(st.binary(max_size=80), json_value.map(orjson.dumps),
                      st.fixed_dictionaries({"response": json_value}, optional={"prompt": st.one_of(json_value, st.lists(json_message, max_size=3))}).map(orjson.dumps)))
def test_score_input_lines_parse_or_raise_input_error(line: bytes) -> None:
    try:
        record, item = parse_line(7, line)
    except InputError as err:
        assert "line 7" in str(err)
        return
    assert isinstance(record, dict) and isinstance(item.response, str)
    assert all(m["role"] in {"user", "assistant", "system"} and isinstance(m["content"], str) for m in item.prompt)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=200), json_value.map(orjson.dumps),
                      st.fixed_dictionaries({"choices": st.one_of(json_value, st.lists(st.fixed_dictionaries(
                          {"message": st.one_of(json_value, st.fixed_dictionaries({"content": json_value}))},
                          optional={"finish_reason": json_value}), max_size=2))},
                          optional={"usage": json_value}).map(orjson.dumps)))
def test_chat_reply_parser_returns_a_reply_or_a_failed_call(body: bytes) -> None:
    reply = ChatClient(base_url="http://127.0.0.1:1/v1", api_key="")._reply(body)
    if isinstance(reply, CallFailed):
        assert str(reply).split(":")[0] in {"bad response", "no content"}
    else:
        assert isinstance(reply.text, str)
        assert reply.finish_reason is None or isinstance(reply.finish_reason, str)
        assert reply.completion_tokens is None or isinstance(reply.completion_tokens, int)


# --- the data block of a prompt: any text stays inside it


@settings(max_examples=300, deadline=None)
@given(response=st.text(max_size=60) | st.text(st.characters(), max_size=30), history=st.lists(st.text(max_size=20), max_size=3))
def test_any_text_stays_inside_the_data_block(response: str, history: list[str]) -> None:
    prompt = [{"role": "user", "content": h} for h in history]
    messages = render(VOCAB, Mode.CLOSED, prompt, response)
    assert messages[0]["content"] == SYSTEM
    user_text = messages[1]["content"]
    assert user_text.count("<conversation>") == 1 and user_text.count("</conversation>") == 1
    data = user_text.split("<conversation>\n", 1)[1].split("\n</conversation>", 1)[0]
    assert not any(c in data for c in "<>&\n")
    clean = lambda s: "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)  # noqa: E731
    assert orjson.loads(data) == {"conversation": [{"role": "user", "content": clean(h)} for h in history], "response": clean(response)}


_GZ_JSONL = gzip.compress(b"\n".join(orjson.dumps({"prompt": f"q{i}", "chosen": "a" * i, "rejected": "b"}) for i in range(60)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(_GZ_JSONL) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(1, len(_GZ_JSONL) - 1)), suffix=st.sampled_from([".jsonl.gz", ".json.gz", ".csv.gz"]))
def test_damaged_gzip_streams_are_input_errors(tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int]],
                                               cut: int | None, suffix: str) -> None:
    """Bytes changed inside the deflate stream (zlib.error, not an OSError) or the file cut short."""
    data = bytearray(_GZ_JSONL)
    for at, value in edits:
        data[at] = value
    path = tmp_path_factory.mktemp("gz") / f"in{suffix}"
    path.write_bytes(bytes(data[:cut]))
    try:
        rows = list(open_records(InputSpec(str(path)), lambda r: None).rows)
    except InputError:
        return
    assert all(isinstance(r.record, dict) for r in rows)
