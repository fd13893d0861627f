"""The ingest stage: bad input in lenient and strict mode, thresholds, duplicates, re-runs, input kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from valind.config import validate_config
from valind.errors import InputError, StageFailed
from valind.ingest import run_ingest
from valind.workspace import Workspace, read_json


def ok(i: int) -> dict[str, Any]:
    return {"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}


# (raw line or record, expected reason, expected field)
BAD_LINES: list[tuple[Any, str, str | None]] = [
    (b'{"prompt": "p", "chosen": "a", "rejected": ', "malformed_json", None),
    (b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "b"}', "invalid_utf8", None),
    (b'["a", "list"]', "not_an_object", None),
    ({"prompt": "p", "chosen": "a"}, "missing_field", "rejected"),
    ({"prompt": "p", "good": "a", "rejected": "b"}, "missing_field", "chosen"),  # renamed field
    ({"prompt": "p", "chosen": "a", "rejected": None}, "missing_field", "rejected"),
    ({"prompt": "p", "chosen": ["not", "messages"], "rejected": "b"}, "wrong_type", "chosen[0]"),
    ({"prompt": "p", "chosen": 3.5, "rejected": "b"}, "wrong_type", "chosen"),
    ({"prompt": "p", "chosen": "   ", "rejected": "b"}, "empty_response", "chosen"),
    ({"prompt": "p", "chosen": "same", "rejected": " same "}, "identical_responses", "rejected"),
    ({"prompt": "p", "chosen": "x" * 501, "rejected": "b"}, "text_too_long", "chosen"),
    ({"prompt": [{"role": "robot", "content": "hi"}], "chosen": "a", "rejected": "b"}, "invalid_value", "prompt[0].role"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "empty_prompt", "prompt"),
]


def config(path: Path, **ingest: Any) -> Any:
    src = {"path": str(path), "adapter": "generic", "name": "src"}
    return validate_config({"ingest": {"sources": [src], "max_text_chars": 500, **ingest}})


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    records: list[Any] = [ok(i) for i in range(40)]
    for k, (line, _, _) in enumerate(BAD_LINES):
        records.insert(3 * k + 1, line)
    records.insert(5, b"")  # a blank line is not a record
    return write_jsonl(tmp_path / "bad.jsonl", records)


def test_lenient_mode_counts_every_bad_row_by_reason(tmp_path: Path, bad_file: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    result = run_ingest(config(bad_file, max_reject_fraction=1.0), ws)
    rep = result.sources[0]
    expected: dict[str, int] = {}
    for _, reason, _ in BAD_LINES:
        expected[reason] = expected.get(reason, 0) + 1
    assert rep["rejected"] == expected
    assert rep["rows_read"] == 40 + len(BAD_LINES) and rep["blank_lines"] == 1
    assert rep["pairs_kept"] == 40
    assert rep["rows_read"] == rep["pairs_kept"] + rep["rows_rejected"]  # nothing lost without a count
    fields = {ex["field"] for exs in rep["examples"].values() for ex in exs}
    assert {f for _, _, f in BAD_LINES if f} <= fields
    assert pq.read_table(ws.ingest_file("src")).num_rows == 40
    assert read_json(ws.ingest_report)["sources"][0]["rejected"] == expected


@pytest.mark.parametrize(("line", "reason", "field"), BAD_LINES, ids=[r for _, r, _ in BAD_LINES])
def test_strict_mode_names_file_line_and_field(tmp_path: Path, line: Any, reason: str, field: str | None) -> None:
    path = write_jsonl(tmp_path / "one_bad.jsonl", [ok(0), ok(1), line, ok(2)])
    with pytest.raises(InputError) as e:
        run_ingest(config(path, strict=True), Workspace(tmp_path / "ws"))
    msg = str(e.value)
    assert str(path) in msg and "line 3" in msg and f"({reason})" in msg
    if field:
        assert f"field {field!r}" in msg
    assert not (tmp_path / "ws" / "ingest" / "src.parquet").exists()  # no partial output


def test_reject_fraction_over_threshold_fails_and_writes_no_output(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mostly_bad.jsonl", [ok(0), {"prompt": "p"}, {"prompt": "q"}, ok(1)])
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(StageFailed) as e:
        run_ingest(config(path, max_reject_fraction=0.25), ws)
    assert "2 of 4 records rejected" in str(e.value) and "missing_field 2" in str(e.value)
    assert not ws.ingest_file("src").exists()
    assert read_json(ws.ingest_report)["sources"][0]["status"] == "failed"  # the report explains it
    run_ingest(config(path, max_reject_fraction=0.5), ws)  # at the threshold it passes
    assert pq.read_table(ws.ingest_file("src")).num_rows == 2


def test_duplicates_within_and_across_sources_kept_once(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [ok(0), ok(1), ok(0)])
    b = write_jsonl(tmp_path / "b.jsonl", [ok(1), ok(2)])
    srcs = [{"path": str(a), "adapter": "generic"}, {"path": str(b), "adapter": "generic"}]
    ws = Workspace(tmp_path / "ws")
    result = run_ingest(validate_config({"ingest": {"sources": srcs}}), ws)
    ra, rb = result.sources
    assert (ra["pairs_kept"], ra["duplicates_within_source"]) == (2, 1)
    assert (rb["pairs_kept"], rb["duplicates_across_sources"]) == (1, 1)
    ids = pq.read_table(ws.ingest_file("a"))["pair_id"].to_pylist() + pq.read_table(ws.ingest_file("b"))["pair_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 3


def test_pair_id_is_stable_and_independent_of_source(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [ok(7)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"q": "question 7", "c": "good answer 7", "r": "bad answer 7", "extra": 1}])
    ws1, ws2 = Workspace(tmp_path / "w1"), Workspace(tmp_path / "w2")
    run_ingest(config(a), ws1)
    run_ingest(validate_config({"ingest": {"sources": [{"path": str(b), "adapter": "generic", "name": "src",
                                                         "options": {"prompt": "q", "chosen": "c", "rejected": "r"}}]}}), ws2)
    id1 = pq.read_table(ws1.ingest_file("src"))["pair_id"][0].as_py()
    assert id1 == pq.read_table(ws2.ingest_file("src"))["pair_id"][0].as_py()
    assert len(id1) == 32 and int(id1, 16) >= 0


def test_rerun_skips_and_changes_are_picked_up(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ok(0), ok(1)])
    ws = Workspace(tmp_path / "ws")
    assert run_ingest(config(path), ws).skipped is False
    first = ws.ingest_file("src").read_bytes()
    assert run_ingest(config(path), ws).skipped is True
    assert run_ingest(config(path, max_text_chars=400), ws).skipped is False  # a setting changed
    assert ws.ingest_file("src").read_bytes() == first  # same input, same bytes
    write_jsonl(path, [ok(0), ok(1), ok(2)])
    result = run_ingest(config(path, max_text_chars=400), ws)  # the input changed
    assert result.skipped is False and result.sources[0]["pairs_kept"] == 3
    ws.ingest_file("src").unlink()
    assert run_ingest(config(path, max_text_chars=400), ws).skipped is False  # an output went missing


def test_removed_source_output_is_deleted(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [ok(0)])
    b = write_jsonl(tmp_path / "b.jsonl", [ok(1)])
    ws = Workspace(tmp_path / "ws")
    both = [{"path": str(a), "adapter": "generic"}, {"path": str(b), "adapter": "generic"}]
    run_ingest(validate_config({"ingest": {"sources": both}}), ws)
    run_ingest(validate_config({"ingest": {"sources": both[:1]}}), ws)
    assert ws.ingest_file("a").exists() and not ws.ingest_file("b").exists()


def test_manifest_has_resolved_config_and_input_fingerprints(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ok(0)])
    ws = Workspace(tmp_path / "ws")
    run_ingest(config(path), ws)
    m = read_json(ws.manifest)
    assert m["config"]["ingest"]["sources"][0]["path"] == str(path)
    assert m["config"]["ingest"]["max_reject_fraction"] == 0.2  # defaults are written resolved
    assert m["inputs"]["ingest.src"].startswith("blake2b:")
    assert m["versions"]["valind"]


def test_limit_reads_only_the_first_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ok(i) for i in range(10)])
    cfg = validate_config({"ingest": {"sources": [{"path": str(path), "adapter": "generic", "name": "src", "limit": 4}]}})
    assert run_ingest(cfg, Workspace(tmp_path / "ws")).sources[0]["rows_read"] == 4


def test_csv_invalid_utf8_and_ragged_rows_rejected_by_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,chosen,rejected\np,a,b\nq,caf\xe9,b\nr,a,b,extra\ns,c,d\n")
    rep = run_ingest(config(path, max_reject_fraction=1.0), Workspace(tmp_path / "ws")).sources[0]
    assert rep["pairs_kept"] == 2
    assert rep["rejected"] == {"invalid_utf8": 1, "malformed_csv": 1}
    assert rep["examples"]["invalid_utf8"][0] == {"row": 2, "field": "chosen", "detail": "invalid UTF-8 in this field"}


def test_local_dataset_folder_goes_through_datasets(tmp_path: Path) -> None:
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([ok(i) for i in range(5)]), folder / "train-00000-of-00001.parquet")
    rep = run_ingest(config(folder), Workspace(tmp_path / "ws")).sources[0]
    assert rep["pairs_kept"] == 5 and rep["fingerprint"].startswith("blake2b-tree:")


def test_hub_name_offline_gives_a_clear_error(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE=1, so this goes through the real Hub loading code without network
    cfg = validate_config({"ingest": {"sources": [{"path": "valind-test/no-such-dataset"}]}})
    with pytest.raises(InputError) as e:
        run_ingest(cfg, Workspace(tmp_path / "ws"))
    assert "valind-test/no-such-dataset" in str(e.value) and "local file" in str(e.value)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        run_ingest(config(tmp_path / "nope.jsonl"), Workspace(tmp_path / "ws"))


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl.gz", [ok(i) for i in range(2000)], gz=True)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputError) as e:
        run_ingest(config(path), Workspace(tmp_path / "ws"))
    assert str(path) in str(e.value)


def test_meta_keeps_the_source_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ok(0), {"prompt": "p"}, ok(1)])
    ws = Workspace(tmp_path / "ws")
    run_ingest(config(path, max_reject_fraction=1.0), ws)
    metas = [orjson.loads(m) for m in pq.read_table(ws.ingest_file("src"))["meta"].to_pylist()]
    assert [m["row"] for m in metas] == [1, 3]


def test_real_hh_rlhf_harmless_base_test(tmp_path: Path, shared_data: Path) -> None:
    """The real file: 2,312 pairs; the few that do not survive are counted with their reasons."""
    path = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    cfg = validate_config({"ingest": {"sources": [{"path": str(path)}]}})
    ws = Workspace(tmp_path / "ws")
    rep = run_ingest(cfg, ws).sources[0]
    assert rep["adapter"] == "hh_rlhf" and rep["rows_read"] == 2312
    assert rep["rows_read"] == rep["pairs_kept"] + rep["rows_rejected"] + rep["duplicates_within_source"]
    # transcripts whose two sides differ before the last Assistant turn, and empty final replies
    assert rep["rejected"] == {"empty_response": 4, "transcript_mismatch": 5}
    table = pq.read_table(ws.ingest_file("harmless-base-test"))
    assert table.num_rows == rep["pairs_kept"] == 2303
    prompts = table["prompt"].to_pylist()
    assert all(p[-1]["role"] == "user" for p in prompts)
    assert sum(len(p) > 1 for p in prompts) > 1000  # multi-turn conversations are kept
