"""`valind export`: value subsets as Hub-ready datasets (cards, data files the `datasets` library loads)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from valind.cli import app
from valind.config import Config
from valind.errors import ValindError
from valind.export import run_export
from valind.workspace import Workspace, atomic_write_json


def _turns(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _workspace(root: Path) -> Workspace:
    ws = Workspace(root)
    rows = [{"prompt": _turns("user", f"question {i}"), "chosen": _turns("assistant", f"kind answer {i}"),
             "rejected": _turns("assistant", f"curt answer {i}"), "pair_id": f"{i:032x}", "source": "demo", "flipped": i % 3 == 0}
            for i in range(12)]
    ws.subsets_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:9]), ws.subset_file("legal awareness"))
    pq.write_table(pa.Table.from_pylist(rows[9:]), ws.heldout_file("legal awareness"))
    ws.subsets_stats.write_text("value,valence,category,chosen_side,rejected_side,total,heldout,status,reason,source:demo\n"
                                "legal awareness,positive,Protective,6,3,9,3,selected,,9\n")
    atomic_write_json(ws.subsets_report, {"extractor_id": "fake-1", "files": {"legal awareness": {"train": "subsets/legal_awareness.parquet"}},
                                          "criteria": {"min_pairs": 5, "valences": ["positive"], "categories": ["Protective"],
                                                       "heldout_fraction": 0.25}})
    return ws


def test_export_writes_hub_ready_datasets(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    result = run_export(Config(), ws)
    assert result.adapters == [] and len(result.datasets) == 1
    folder = result.datasets[0]
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"},
                                                  {"split": "test", "path": "data/test-*.parquet"}]
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == {"train": 9, "test": 3}
    assert "value:legal awareness" in header["tags"] and "`fake-1`" in card and "flipped" in card
    # the folder loads with the datasets library exactly as the Hub would serve it
    from datasets import load_dataset

    loaded = load_dataset(str(folder))
    assert loaded["train"].num_rows == 9 and loaded["test"].num_rows == 3
    assert loaded["train"][0]["chosen"] == [{"role": "assistant", "content": "kind answer 0"}]
    index = (ws.export_dir / "export.json").read_text()
    assert "legal_awareness/data/train-00000-of-00001.parquet" not in index  # paths are relative to each folder
    assert "data/train-00000-of-00001.parquet" in index


def test_export_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValindError, match="run `valind subsets`"):
        run_export(Config(), Workspace(tmp_path / "empty"))
    ws = _workspace(tmp_path / "ws")
    with pytest.raises(ValindError, match="no subset for 'empathy'; values with a subset: legal awareness"):
        run_export(Config(), ws, ["empathy"])
    result = CliRunner().invoke(app, ["export", "-w", str(ws.root), "--values", "legal awareness"])
    assert result.exit_code == 0, result.output
    assert "1 datasets" in result.output
