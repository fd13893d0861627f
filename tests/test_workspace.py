from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from valind.errors import ValindError
from valind.workspace import Workspace, atomic_path, atomic_write_json, git_state, hash_file, read_json


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_stage_done_only_when_key_matches_and_outputs_intact(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    out = ws.ingest_file("a")
    out.parent.mkdir(parents=True)
    out.write_bytes(b"12345")
    ws.record_stage("ingest", "k1", [out], {"n": 1})
    assert ws.stage_done("ingest", "k1") is not None
    assert ws.stage_done("ingest", "k2") is None  # settings changed
    out.write_bytes(b"123")  # output truncated
    assert ws.stage_done("ingest", "k1") is None
    out.unlink()
    assert ws.stage_done("ingest", "k1") is None


def test_paths_are_safe_components(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.train_dir("meta-llama/Llama-3-8B", "legal awareness").relative_to(ws.root).parts == (
        "train", "meta-llama--Llama-3-8B", "legal_awareness"
    )
    with pytest.raises(ValindError):
        ws.subset_file("..")


def test_manifest_records_config_versions_and_inputs(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.update_manifest({"ingest": {"strict": False}}, {"ingest.a": "blake2b:00"}, "ingest")
    ws.update_manifest({"ingest": {"strict": True}}, {"extract.b": "x"}, "extract")
    m = read_json(ws.manifest)
    assert m["config"] == {"ingest": {"strict": True}}
    assert m["inputs"] == {"ingest.a": "blake2b:00", "extract.b": "x"}  # merged across stages
    assert set(m["stages"]) == {"ingest", "extract"}
    assert "python" in m["versions"] and "pyarrow" in m["versions"]


def test_git_state_reads_sha_and_dirty_flag(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None  # not a checkout
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    state = git_state(tmp_path)
    assert state is not None and len(state["sha"]) == 40 and state["dirty"] is False
    (tmp_path / "f").write_text("2")
    assert git_state(tmp_path)["dirty"] is True


def test_hash_file_changes_with_content(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"a")
    h1 = hash_file(f)
    f.write_bytes(b"b")
    assert hash_file(f) != h1 and h1.startswith("blake2b:")
