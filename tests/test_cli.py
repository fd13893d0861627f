from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from conftest import write_jsonl
from valind.cli import app

runner = CliRunner()


def test_help_lists_every_command_with_a_description() -> None:
    result = subprocess.run([sys.executable, "-m", "valind", "--help"], capture_output=True, text=True, check=True)
    for command in ("ingest", "demo"):
        line = next(l for l in result.stdout.splitlines() if l.strip().startswith(f"│ {command} ") or l.strip().startswith(command))
        assert len(line.split(command, 1)[1].strip(" │")) > 10, line  # a one-line description follows


def test_ingest_prints_summary_and_reruns_as_up_to_date(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p"}] * 3)
    args = ["ingest", str(path), "-w", str(tmp_path / "ws"), "-a", "generic", "--set", "ingest.max_reject_fraction=0.9"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "missing_field 3" in first.output and "ingest_report.json" in first.output
    second = runner.invoke(app, args)
    assert "up to date" in second.output


def test_adapter_options_from_the_command_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "p", "good": "a", "bad": "b"}])
    result = runner.invoke(app, ["ingest", str(path), "-w", str(tmp_path / "ws"), "-a", "generic",
                                 "-o", "prompt=q", "-o", "chosen=good", "-o", "rejected=bad"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ws" / "ingest" / "d.parquet").exists()


def test_errors_are_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}])
    result = runner.invoke(app, ["ingest", str(path), "-w", str(tmp_path / "ws"), "--strict"])
    assert result.exit_code == 2
    assert "line 1" in result.output and "identical_responses" in result.output
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["ingest", str(path), "-w", str(tmp_path / "ws"), "-a", "nope"])
    assert bad.exit_code == 2 and "Available:" in bad.output
    cfg = runner.invoke(app, ["ingest", str(path), "-w", str(tmp_path / "ws"), "--set", "ingest.max_text_chars=-1"])
    assert cfg.exit_code == 2 and "ingest.max_text_chars" in cfg.output
