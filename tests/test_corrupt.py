"""Damaged state is detected, reported and recomputed or refused, never trusted.

A truncated or changed Parquet output, a stage record that is not JSON, a cache file with a damaged
page or a changed value, a manifest edited by hand, a training cell with a missing or changed
adapter file, and damaged input files.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from valind.cache import Cache, CacheCorrupted
from valind.cli import app
from valind.config import Config, validate_config
from valind.errors import InputError, ValindError
from valind.extract.stage import extractor_id, run_extract
from valind.ingest import run_ingest
from valind.subsets import run_subsets
from valind.train.plan import CellPaths, CellState, cell_state, output_checksums, output_sizes
from valind.workspace import ManifestChanged, Workspace, atomic_write_json, read_json

# Responses the fake extractor tags by keyword: empathy in 6 chosen, humor in 6 chosen.
PAIRS = [
    *({"prompt": f"I feel sad ({i})", "chosen": f"I hear you; empathy first ({i}).", "rejected": f"Whatever ({i})."} for i in range(6)),
    *({"prompt": f"Joke please ({i})", "chosen": f"Some humor: a pun ({i}).", "rejected": f"No ({i})."} for i in range(6)),
]


def config(tmp_path: Path) -> Config:
    return validate_config({
        "cache_dir": str(tmp_path / "cache"),
        "ingest": {"sources": [{"path": str(tmp_path / "pairs.jsonl"), "adapter": "generic", "name": "p"}]},
        "extract": {"extractor": "fake"},
        "subsets": {"min_pairs": 3},
    })


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    ws = Workspace(tmp_path / "ws")
    cfg = config(tmp_path)
    run_ingest(cfg, ws)
    run_extract(cfg, ws)
    run_subsets(cfg, ws)
    return ws


def flip_byte(path: Path, at: int | None = None) -> None:
    """Change one byte in the middle of the file: same size, other content."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


# --- Parquet outputs and stage records


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_ingest_output_is_recomputed_and_refused_by_the_next_stage(
    tmp_path: Path, ws: Workspace, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path)
    path = ws.ingest_file("p")
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    else:
        flip_byte(path)
    # the next stage never reads it: it names the file and says what to do
    ws.clear_stage(f"extract/{extractor_id(cfg.extract)}")
    with pytest.raises(ValindError, match=r"ingest/p\.parquet .*run `valind ingest`"):
        run_extract(cfg, ws)
    # the stage that wrote it sees the damage, says so, and writes it again, byte for byte
    with caplog.at_level(logging.WARNING, logger="valind.workspace"):
        result = run_ingest(cfg, ws)
    assert not result.skipped
    assert "ingest/p.parquet" in caplog.text and "the ingest stage runs again" in caplog.text
    assert path.read_bytes() == good
    assert not run_extract(cfg, ws).skipped


def test_damaged_subset_file_is_rewritten_identically(tmp_path: Path, ws: Workspace) -> None:
    cfg = config(tmp_path)
    files = sorted(ws.subsets_dir.glob("*.parquet"))
    assert [f.stem for f in files] == ["empathy", "humor"]
    before = {f: f.read_bytes() for f in files}
    flip_byte(files[0], at=len(before[files[0]]) - 40)  # inside the footer metadata
    result = run_subsets(cfg, ws)
    assert not result.skipped
    assert {f: f.read_bytes() for f in files} == before
    assert run_subsets(cfg, ws).skipped


def test_stage_record_records_checksums_of_what_it_wrote(tmp_path: Path, ws: Workspace) -> None:
    record = ws.stage_record("subsets")
    assert record is not None and set(record.checksums) == set(record.outputs)
    assert all(v.startswith("xxh3:") for v in record.checksums.values())
    assert ws.output_problems(record) == []
    (ws.root / "subsets" / "stats.csv").unlink()
    assert ws.output_problems(record) == ["subsets/stats.csv is missing"]


def test_unreadable_stage_record_means_the_stage_runs_again(tmp_path: Path, ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    ws.stage_record_path("subsets").write_bytes(b'{"stage": "subsets", "key": ')  # cut short
    with caplog.at_level(logging.WARNING, logger="valind.workspace"):
        assert ws.stage_record("subsets") is None
        assert not run_subsets(config(tmp_path), ws).skipped
    assert "unreadable stage record" in caplog.text
    ws.stage_record_path("subsets").write_bytes(b'{"unexpected": 1}')  # valid JSON, not a record
    assert ws.stage_record("subsets") is None


def test_train_refuses_a_subset_file_changed_since_it_was_written(tmp_path: Path, ws: Workspace) -> None:
    from valind.train import run_train

    flip_byte(ws.subset_file("empathy"))
    cfg = validate_config({**config(tmp_path).model_dump(mode="json"), "train": {"values": ["empathy"]}})
    with pytest.raises(ValindError, match=r"subsets/empathy\.parquet is not the file the subsets stage wrote"):
        run_train(cfg, ws, dry_run=True)


# --- the model-call cache


def test_changed_cache_value_is_a_miss_and_is_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.sqlite"
    with Cache(path) as cache:
        cache.put_many("extract", {"k1": {"values": ["MARKER-empathy"]}, "k2": {"values": ["humor"]}})
    data = path.read_bytes()
    at = data.index(b"MARKER-empathy")
    flip_byte(path, at=at)  # "LARKER-empathy": still valid JSON, same size; SQLite's own checks cannot see it
    with Cache(path) as cache, caplog.at_level(logging.WARNING, logger="valind.cache"):
        assert cache.get_many("extract", ["k1", "k2"]) == {"k2": {"values": ["humor"]}}
        assert (cache.damaged, cache.hits, cache.misses) == (1, 1, 1)
        cache.put("extract", "k1", {"values": ["empathy"]})  # the recomputed result replaces it
        assert cache.get("extract", "k1") == {"values": ["empathy"]}
    assert "damaged extract entries" in caplog.text


def test_cache_file_from_before_checksums_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
                 "created_at REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID")
    conn.execute("INSERT INTO entries VALUES ('ns', 'old', ?, 0)", [orjson.dumps({"a": 1})])
    conn.execute("INSERT INTO entries VALUES ('ns', 'bad', ?, 0)", [b"{not json"])
    conn.commit()
    conn.close()
    with Cache(path) as cache:
        assert cache.get_many("ns", ["old", "bad"]) == {"old": {"a": 1}}  # trusted when it decodes
        assert cache.damaged == 1
        cache.put("ns", "new", [1, 2])
    with Cache(path) as cache:
        assert cache.get_many("ns", ["old", "new"]) == {"old": {"a": 1}, "new": [1, 2]}


def _damage_pages(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(4096 * 2)
        f.write(b"\xff" * 4096 * 2)


def test_damaged_cache_page_stops_the_cli_with_a_clear_message_and_a_fresh_file_works(tmp_path: Path, ws: Workspace) -> None:
    cfg = config(tmp_path)
    cache_file = tmp_path / "cache" / "calls.sqlite"
    with Cache(cache_file) as cache:  # enough entries for several pages
        cache.put_many("other", {f"k{i}": {"text": "x" * 300} for i in range(400)})
    _damage_pages(cache_file)
    ws.clear_stage(f"extract/{extractor_id(cfg.extract)}")
    cfg_file = tmp_path / "config.json"  # YAML is a superset of JSON
    cfg_file.write_bytes(orjson.dumps(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["extract", "-w", str(ws.root), "-c", str(cfg_file)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "cache file is corrupted" in message and "can be deleted" in message and "Traceback" not in result.output
    cache_file.unlink()
    result = CliRunner().invoke(app, ["extract", "-w", str(ws.root), "-c", str(cfg_file)])
    assert result.exit_code == 0, result.output


def test_page_damaged_after_opening_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    with Cache(path) as cache:
        cache.put_many("ns", {f"k{i}": {"text": "y" * 500} for i in range(300)})
    cache = Cache(path)
    try:
        with Cache(path) as other:  # another process writes, so this connection reads pages from disk again
            other.put("ns", "z", 1)
        _damage_pages(path)  # a disk that goes bad mid-run
        with pytest.raises(CacheCorrupted, match="calls.sqlite"):
            cache.get_many("ns", [f"k{i}" for i in range(300)])
    finally:
        cache.close()


# --- the manifest


def test_hand_edited_manifest_is_reported_not_used(tmp_path: Path, ws: Workspace) -> None:
    manifest = read_json(ws.manifest)
    assert manifest["checksum"].startswith("xxh3:") and ws.read_manifest() == manifest
    manifest["config"]["extract"]["extractor"] = "embedded"  # a hand edit, checksum left as it was
    ws.manifest.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    with pytest.raises(ManifestChanged, match="changed since valind wrote it"):
        ws.read_manifest()
    # the CLI reuses the workspace's config only when no -c is given: it refuses, naming the file
    result = CliRunner().invoke(app, ["extract", "-w", str(ws.root)])
    assert result.exit_code == 2 and "manifest.json was changed since valind wrote it" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    # with a config file the stage runs; the edited manifest is kept aside, a new one written
    cfg_file = tmp_path / "config.json"
    cfg_file.write_bytes(orjson.dumps(config(tmp_path).model_dump(mode="json")))
    ws.clear_stage(f"extract/{extractor_id(config(tmp_path).extract)}")
    assert CliRunner().invoke(app, ["extract", "-w", str(ws.root), "-c", str(cfg_file)]).exit_code == 0
    assert read_json(ws.root / ".valind" / "manifest.rejected.json")["config"]["extract"]["extractor"] == "embedded"
    assert ws.read_manifest()["config"]["extract"]["extractor"] == "fake"
    assert CliRunner().invoke(app, ["extract", "-w", str(ws.root)]).exit_code == 0


def test_manifest_layout_changes_do_not_count_as_edits(ws: Workspace) -> None:
    manifest = read_json(ws.manifest)
    ws.manifest.write_bytes(orjson.dumps(manifest))  # no indentation, same content
    assert ws.read_manifest() == manifest
    ws.manifest.write_bytes(b'{"config": ')
    with pytest.raises(ManifestChanged, match="not valid JSON"):
        ws.read_manifest()


# --- training cells


def _finished_cell(tmp_path: Path) -> CellPaths:
    """A cell folder as training leaves it: adapter, run config, DONE with sizes and checksums."""
    paths = CellPaths(tmp_path / "train" / "m" / "empathy" / "dpo-seed0-beta0.1")
    paths.adapter.mkdir(parents=True)
    (paths.adapter / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
    (paths.adapter / "adapter_config.json").write_text('{"r": 8}')
    atomic_write_json(paths.run_config, {"id": "x"})
    atomic_write_json(paths.done, {"key": "K", "outputs": output_sizes(paths), "checksums": output_checksums(paths)})
    return paths


@pytest.mark.parametrize("damage", ["delete", "flip", "truncate", "bad-marker"])
def test_damaged_training_cell_is_trained_again(tmp_path: Path, damage: str) -> None:
    paths = _finished_cell(tmp_path)
    assert cell_state(paths, "K") is CellState.DONE
    weights = paths.adapter / "adapter_model.safetensors"
    if damage == "delete":
        weights.unlink()
    elif damage == "flip":
        flip_byte(weights)
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        paths.done.write_bytes(b'{"key": "K", "outp')
    assert cell_state(paths, "K") is CellState.PARTIAL


# --- damaged input files


def test_input_parquet_with_a_damaged_page_is_an_input_error(tmp_path: Path) -> None:
    table = pa.table({"prompt": [f"p{i}" * 20 for i in range(3000)], "chosen": ["c"] * 3000, "rejected": ["r"] * 3000})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=500)
    data = bytearray(src.read_bytes())
    data[300:1300] = bytes(b ^ 0x5A for b in data[300:1300])  # data pages; the footer is intact
    src.write_bytes(bytes(data))
    cfg = validate_config({"ingest": {"sources": [{"path": str(src), "adapter": "generic", "name": "p"}]}})
    with pytest.raises(InputError, match=r"in\.parquet.*damaged data page"):
        run_ingest(cfg, Workspace(tmp_path / "ws"))
    src.write_bytes(bytes(data[: len(data) // 2]))  # cut short: no footer
    with pytest.raises(InputError, match="not a readable Parquet file"):
        run_ingest(cfg, Workspace(tmp_path / "ws"))
    assert not Workspace(tmp_path / "ws").ingest_file("p").exists()  # nothing half written was put in place


def test_csv_with_a_very_long_field_is_read(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("prompt,chosen,rejected\nhi," + "x" * 300_000 + ",no\n" + "".join(f"q{i},yes,no\n" for i in range(9)))
    cfg: Any = validate_config({"ingest": {"sources": [{"path": str(src), "adapter": "generic", "name": "p"}]}})
    result = run_ingest(cfg, Workspace(tmp_path / "ws"))
    (source,) = result.sources
    assert source["pairs_kept"] == 9 and source["rejected"] == {"text_too_long": 1}  # counted, not a crash
