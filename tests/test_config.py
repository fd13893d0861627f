from __future__ import annotations

from pathlib import Path

import pytest

from valind.config import apply_overrides, load_config, validate_config
from valind.errors import ConfigError, UnknownNameError
from valind.ingest.adapters import adapter_class, make_adapter, source_name


def test_defaults_validate() -> None:
    cfg = load_config()
    assert cfg.ingest.strict is False
    assert 0 < cfg.ingest.max_reject_fraction < 1


def test_invalid_value_names_the_field_and_the_allowed_range() -> None:
    with pytest.raises(ConfigError) as e:
        validate_config({"ingest": {"max_reject_fraction": 3}})
    assert "ingest.max_reject_fraction" in str(e.value)
    assert "less than or equal to 1" in str(e.value)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.strcit"):
        validate_config({"ingest": {"strcit": True}})


def test_adapter_option_with_allowed_values() -> None:
    with pytest.raises(ConfigError) as e:
        make_adapter(adapter_class("pku_saferlhf"), {"preference": "safest"}, "pku")
    assert "options.preference" in str(e.value) and "'better' or 'safer'" in str(e.value)


def test_unknown_adapter_lists_valid_names_and_suggests() -> None:
    with pytest.raises(UnknownNameError) as e:
        adapter_class("hh_rlfh")
    msg = str(e.value)
    assert "did you mean 'hh_rlhf'" in msg.lower()
    assert "pku_saferlhf" in msg and "generic" in msg


def test_overrides_parse_yaml_values() -> None:
    data = apply_overrides({}, ["ingest.strict=true", "ingest.max_text_chars=10", "cache_dir=/tmp/x"])
    cfg = validate_config(data)
    assert cfg.ingest.strict is True and cfg.ingest.max_text_chars == 10 and cfg.cache_dir == "/tmp/x"


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["ingest.strict"])


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text("{}\n")
    conf = tmp_path / "conf" / "run.yaml"
    conf.parent.mkdir()
    conf.write_text("ingest:\n  sources:\n    - path: ../data/pairs.jsonl\n    - path: Anthropic/hh-rlhf\n")
    cfg = load_config(conf)
    assert cfg.ingest.sources[0].path == str((tmp_path / "data" / "pairs.jsonl").resolve())
    assert cfg.ingest.sources[1].path == "Anthropic/hh-rlhf"  # a Hub name stays a Hub name


def test_duplicate_source_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        validate_config({"ingest": {"sources": [{"path": "a/x.jsonl"}, {"path": "b/x.jsonl.gz"}]}})


def test_source_name_defaults() -> None:
    cfg = validate_config({"ingest": {"sources": [{"path": "/d/harmless-base-test.jsonl.gz"}, {"path": "Anthropic/hh-rlhf"}]}})
    assert [source_name(s) for s in cfg.ingest.sources] == ["harmless-base-test", "hh-rlhf"]


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/run.yaml")


@pytest.mark.parametrize("name", ["demo.yaml", "study.yaml", "train_slurm.yaml"])
def test_shipped_configs_load(name: str) -> None:
    from importlib.resources import files

    cfg = load_config(Path(str(files("valind") / "configs" / name)))
    if name == "study.yaml":  # the study's full setting: four Hub datasets, vLLM extractor, base / SFT / instruct, frontier
        assert len(cfg.ingest.sources) == 4 and cfg.extract.extractor == "vllm" and len(cfg.train.models) == 3
        assert len(cfg.train.betas) * (len(cfg.train.snapshot_steps) + 1) >= 4 and cfg.train.executor.value == "slurm"
