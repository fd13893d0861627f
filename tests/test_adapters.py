"""Each adapter on records written to its source's published schema, through a real file and the ingest stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import hh, write_jsonl
from fixtures import HELPSTEER2_PREFERENCE, HELPSTEER2_REGULAR, PKU, UF_BINARIZED, UF_RAW
from valind.config import validate_config
from valind.ingest import run_ingest
from valind.workspace import Workspace


def ingest_one(tmp_path: Path, path: Path, adapter: str = "auto", **source: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ingest one file; return (kept rows with meta decoded, the source's report)."""
    cfg = validate_config({"ingest": {"sources": [{"path": str(path), "adapter": adapter, "name": "src", **source}],
                                      "max_reject_fraction": 1.0}})
    ws = Workspace(tmp_path / "ws")
    result = run_ingest(cfg, ws)
    rows = pq.read_table(ws.ingest_file("src")).to_pylist()
    for r in rows:
        r["meta"] = orjson.loads(r["meta"])
    return rows, result.sources[0]


def test_hh_rlhf_multi_turn_split_and_mismatch(tmp_path: Path) -> None:
    history = hh("Hi", "Hello, how can I help?")
    records = [
        {"chosen": hh("What's a good pet?", "A cat is easy to keep.", history), "rejected": hh("What's a good pet?", "A tiger.", history)},
        {"chosen": hh("Hello", "Hi there"), "rejected": hh("Hello!", "Go away")},  # prompts differ
        {"chosen": "no assistant turn here", "rejected": hh("x", "y")},
    ]
    rows, rep = ingest_one(tmp_path, write_jsonl(tmp_path / "hh.jsonl", records))
    assert rep["adapter"] == "hh_rlhf"
    assert len(rows) == 1
    assert rows[0]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "What's a good pet?"},
    ]
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("A cat is easy to keep.", "A tiger.")
    assert rep["rejected"] == {"malformed_transcript": 1, "transcript_mismatch": 1}
    assert rep["examples"]["transcript_mismatch"][0] == {
        "line": 2, "field": "rejected", "detail": "chosen and rejected transcripts differ before the final Assistant turn"
    }


@pytest.mark.parametrize("preference", ["better", "safer"])
def test_pku_preference_option(tmp_path: Path, preference: str) -> None:
    rows, rep = ingest_one(tmp_path, write_jsonl(tmp_path / "pku.jsonl", PKU), options={"preference": preference})
    assert rep["adapter"] == "pku_saferlhf" and len(rows) == 3
    by_prompt = {r["prompt"][0]["content"]: r for r in rows}
    address = by_prompt["How can I find someone's home address?"]
    if preference == "better":
        assert address["chosen"].startswith("Search their name")
        assert address["meta"]["chosen_is_safer"] is False
        assert address["meta"]["chosen_harm_categories"] == ["Privacy Violation"]
        assert address["meta"]["chosen_is_safe"] is False and address["meta"]["chosen_severity_level"] == 1
    else:
        assert address["chosen"] == "I can't help locate a private person."
        assert address["meta"]["chosen_is_better"] is False
        assert address["meta"]["rejected_harm_categories"] == ["Privacy Violation"]
    assert all(r["meta"]["preference"] == preference for r in rows)


def test_ultrafeedback_binarized_from_parquet(tmp_path: Path) -> None:
    path = tmp_path / "uf.parquet"
    pq.write_table(pa.Table.from_pylist(UF_BINARIZED), path)
    rows, rep = ingest_one(tmp_path, path)
    assert rep["adapter"] == "ultrafeedback"
    assert [r["chosen"] for r in rows] == ["2+2 equals 4.", "7 is prime."]
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert rows[0]["meta"]["score_chosen"] == 9.0 and rows[0]["meta"]["prompt_id"] == "a" * 64
    assert rep["rejected"] == {"tie": 1}
    assert rep["examples"]["tie"][0]["row"] == 3


def test_ultrafeedback_raw_rule_is_seeded_and_drops_ties(tmp_path: Path) -> None:
    path = tmp_path / "uf_raw.json"
    path.write_text(json.dumps(UF_RAW))
    rows, rep = ingest_one(tmp_path, path, options={"seed": 3})
    assert rep["adapter"] == "ultrafeedback_raw"
    assert rep["rejected"] == {"tie": 1}
    (row,) = rows
    assert row["chosen"].startswith("Plants turn light") and row["meta"]["chosen_model"] == "gpt-4"
    # rejected is one of the strictly lower-rated completions; the N/A rating is ignored in the mean
    assert row["meta"]["rejected_mean_rating"] in {10 / 3, 2.5, 1.25}
    again, _ = ingest_one(tmp_path / "again", path, options={"seed": 3})
    assert again[0]["rejected"] == row["rejected"]  # same seed, same draw
    lowest, _ = ingest_one(tmp_path / "lowest", path, options={"rejected": "lowest"})
    assert lowest[0]["rejected"] == "Sunlight makes plants grow."


def test_ultrafeedback_raw_draw_covers_all_lower_completions(tmp_path: Path) -> None:
    from valind.ingest.adapters.ultrafeedback import RawOptions, UltraFeedbackRaw

    drawn = {UltraFeedbackRaw(RawOptions(seed=s)).build(UF_RAW[0]).rejected for s in range(40)}
    assert drawn == {"It is how plants eat.", "Photosynthesis is a process.", "Sunlight makes plants grow."}


def test_helpsteer2_preference_sign_and_zero(tmp_path: Path) -> None:
    rows, rep = ingest_one(tmp_path, write_jsonl(tmp_path / "hs2.jsonl.gz", HELPSTEER2_PREFERENCE, gz=True))
    assert rep["adapter"] == "helpsteer2"
    assert [(r["chosen"], r["meta"]["preference_strength"]) for r in rows] == [("Rain taps the window / ...", 2), ("A cat sat down.", 3)]
    assert rep["rejected"] == {"no_preference": 1}


def test_helpsteer2_regular_pairs_consecutive_rows_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "hs2_regular.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(HELPSTEER2_REGULAR[0]))
        w.writeheader()
        w.writerows(HELPSTEER2_REGULAR)
    rows, rep = ingest_one(tmp_path, path, adapter="helpsteer2_regular")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("Paris.", "Lyon."), ("Blue is a colour people like.", "Green")]
    assert rows[0]["meta"]["chosen_helpfulness"] == 4 and rows[0]["meta"]["rejected_helpfulness"] == 0
    assert rep["rows_read"] == 7
    assert rep["rejected"] == {"tie": 2, "unpaired": 1}  # counted in rows: a tie is two rows
    assert rep["rows_read"] == 2 * len(rows) + rep["rows_rejected"]


def test_generic_mapping_strings_messages_system_and_meta(tmp_path: Path) -> None:
    records = [
        {"question": "Why is the sky blue?", "good": "Rayleigh scattering.", "bad": "Paint.", "topic": "science", "sys": "Be brief."},
        {"question": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
         "good": "Goodbye!", "bad": "...what?", "topic": "chat"},
        {"question": 42, "good": "a", "bad": "b"},
    ]
    opts = {"prompt": "question", "chosen": "good", "rejected": "bad", "system": "sys", "meta": ["topic"]}
    rows, rep = ingest_one(tmp_path, write_jsonl(tmp_path / "g.jsonl", records), adapter="generic", options=opts)
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    assert rows[0]["meta"] == {"topic": "science", "row": 1}
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    assert rep["rejected"] == {"wrong_type": 1}
    assert rep["examples"]["wrong_type"][0]["field"] == "question"


def test_generic_prompt_from_conversation_columns(tmp_path: Path) -> None:
    conv = lambda reply: [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": reply}]  # noqa: E731
    records = [{"chosen": conv("Yes."), "rejected": conv("No.")}]
    rows, _ = ingest_one(tmp_path, write_jsonl(tmp_path / "c.jsonl", records), adapter="generic", options={"prompt": None})
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q?"}] and rows[0]["chosen"] == "Yes."


def test_auto_detects_each_schema(tmp_path: Path) -> None:
    from valind.ingest.adapters import detect_adapter

    cases = {
        "hh_rlhf": {"chosen": hh("a", "b"), "rejected": hh("a", "c")},
        "pku_saferlhf": PKU[0],
        "ultrafeedback": UF_BINARIZED[0],
        "ultrafeedback_raw": UF_RAW[0],
        "helpsteer2": HELPSTEER2_PREFERENCE[0],
        "helpsteer2_regular": HELPSTEER2_REGULAR[0],
        "generic": {"prompt": "p", "chosen": "a", "rejected": "b"},
    }
    assert {name: detect_adapter(rec, "x").name for name, rec in cases.items()} == {n: n for n in cases}
