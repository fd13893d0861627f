"""The train stage: config checks, planning, TRL DPO / SFT cells on the tiny model, shared reference
log-probs, resuming a killed sweep, the submitit executor and the launcher entry point.

Most tests train the tiny random Llama (``tiny_model``: ~0.8M parameters, a few seconds per cell).
The ``slow`` ones run the submitit LocalExecutor (fresh processes) and the packaged SmolLM2-135M.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import Field
from safetensors.torch import load_file

from valind.cache import Cache
from valind.config import Config
from valind.errors import ConfigError, StageFailed
from valind.models import PACKAGED_SMOLLM2
from valind.schema import PROMPT_TYPE
from valind.train import Method, TrainConfig, format_plan, plan_cells, run_train
from valind.train.cell import main as cell_main
from valind.train.data import dpo_rows, with_system_prompt
from valind.train.plan import CellState, cell_paths
from valind.train.reference import NAMESPACE
from valind.workspace import Workspace

DEMO = Path(__file__).resolve().parents[1] / "src" / "valind" / "data" / "demo" / "pairs.jsonl"
LN2 = math.log(2)

if "train" in Config.model_fields:
    TrainRunConfig = Config
else:  # until Config mounts the section: the same Config with a `train` field

    class TrainRunConfig(Config):  # type: ignore[no-redef]
        train: TrainConfig = Field(default_factory=TrainConfig, description="Train stage settings.")


# ---------------------------------------------------------------- fixtures and helpers




def demo_pairs() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in DEMO.read_bytes().splitlines() if line.strip()]


def write_subset(ws: Workspace, value: str, pairs: list[dict[str, Any]]) -> Path:
    """A subset file as the subsets stage writes it (TRL conversational preference rows)."""
    rows = []
    for i, p in enumerate(pairs):
        flipped = p.get("side") == "rejected"
        chosen, rejected = (p["rejected"], p["chosen"]) if flipped else (p["chosen"], p["rejected"])
        rows.append({
            "prompt": p["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "pair_id": p.get("pair_id", f"{i:032x}"), "source": "demo", "flipped": flipped,
        })
    schema = pa.schema([("prompt", PROMPT_TYPE), ("chosen", PROMPT_TYPE), ("rejected", PROMPT_TYPE),
                        ("pair_id", pa.string()), ("source", pa.string()), ("flipped", pa.bool_())])
    path = ws.subset_file(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def workspace(tmp_path: Path, values: dict[str, slice]) -> Workspace:
    """A workspace whose subsets hold slices of the demo pairs (pair ids: the pair's index in the file)."""
    ws = Workspace(tmp_path / "ws")
    pairs = demo_pairs()
    for i, p in enumerate(pairs):
        p["pair_id"] = f"{i:032x}"
    for value, part in values.items():
        write_subset(ws, value, pairs[part])
    return ws


FAST = {"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "logging_steps": 1, "max_length": 128}


def config(tmp_path: Path, models: list[str], **train: Any) -> Config:
    return TrainRunConfig(cache_dir=str(tmp_path / "cache"), train=TrainConfig(models=models, **{**FAST, **train}))


def train_log(ws: Workspace, cell: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in cell_paths(ws, cell).train_log.read_bytes().splitlines()]


def run_config(ws: Workspace, cell: Any) -> dict[str, Any]:
    return orjson.loads(cell_paths(ws, cell).run_config.read_bytes())


# ---------------------------------------------------------------- config


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'dpo-system'. Did you mean 'dpo\+system'\? Available: dpo, dpo\+system, system, sft"):
        TrainConfig(methods=["dpo-system"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("system_prompt_template", "You value {name}", "unknown placeholder {name}"),
    ("system_prompt_template", "Be good.", "must name the value"),
    ("betas", [0.1, 0.0], "beta must be > 0"),
    ("seeds", [], "at least one"),
    ("seeds", [1, 1], "repeated entries: 1"),
    ("executor", "sluurm", "Did you mean 'slurm'"),
    ("max_steps", 0, "greater than or equal to 1"),
])
def test_bad_settings_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_method_properties() -> None:
    assert [m for m in Method if m.trains] == [Method.DPO, Method.DPO_SYSTEM, Method.SFT]
    assert [m for m in Method if m.uses_system_prompt] == [Method.DPO_SYSTEM, Method.SYSTEM]
    assert [m for m in Method if m.is_preference] == [Method.DPO, Method.DPO_SYSTEM]


def test_learning_rate_default_depends_on_lora() -> None:
    assert TrainConfig().resolved_learning_rate == 5e-5
    assert TrainConfig(lora=False).resolved_learning_rate == 5e-6
    assert TrainConfig(learning_rate=0.0).resolved_learning_rate == 0.0


def test_several_gpus_on_slurm_need_an_accelerate_config() -> None:
    with pytest.raises(ValueError, match="needs accelerate_config"):
        TrainConfig(executor="slurm", slurm={"gpus_per_node": 4})


# ---------------------------------------------------------------- rows and planning


def test_system_prompt_goes_first_or_joins_an_existing_one() -> None:
    user = [{"role": "user", "content": "hi"}]
    assert with_system_prompt(user, "You value humor.") == [{"role": "system", "content": "You value humor."}, *user]
    assert with_system_prompt([{"role": "system", "content": "Be brief."}, *user], "You value humor.")[0] == {
        "role": "system", "content": "You value humor.\n\nBe brief."}
    assert with_system_prompt(user, None) == user
    row = dpo_rows([{"prompt": user, "chosen": [], "rejected": [], "pair_id": "p"}], "S")[0]
    assert row["prompt"][0] == {"role": "system", "content": "S"}


def test_plan_expands_the_sweep_and_collapses_unused_axes(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo+system", "sft", "system"], seeds=[0, 1], betas=[0.1, 0.5])
    cells = plan_cells(cfg, ws)
    per_value = {m: sum(1 for c in cells if c.value == "empathy" and c.method == m) for m in Method if m in cfg.train.methods}
    assert per_value == {Method.DPO_SYSTEM: 4, Method.SFT: 2, Method.SYSTEM: 1}
    assert {c.value for c in cells} == {"empathy", "humor"}  # values: empty = every value with a subset
    system = next(c for c in cells if c.method is Method.SYSTEM)
    assert system.system_prompt.startswith("You value empathy: The response recognises")
    assert system.seed is None and system.beta is None
    assert len({c.id for c in cells}) == len(cells)


def test_a_value_without_a_subset_file_is_an_error_naming_the_available_ones(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    with pytest.raises(ConfigError, match=r"'honesty' has no subset file .* values with a subset: empathy"):
        plan_cells(config(tmp_path, [tiny], values=["honesty"]), ws)


def test_an_empty_subset_is_an_error(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(0, 0)})
    with pytest.raises(ConfigError, match="the subset of 'humor' is empty"):
        plan_cells(config(tmp_path, [tiny]), ws)


def test_no_subsets_at_all_is_an_error(tmp_path: Path, tiny: str) -> None:
    with pytest.raises(ConfigError, match="no value subsets"):
        plan_cells(config(tmp_path, [tiny]), Workspace(tmp_path / "empty"))


def test_an_unknown_model_path_is_an_error(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    with pytest.raises(ConfigError, match="model folder not found"):
        plan_cells(config(tmp_path, [str(tmp_path / "no-such-model")]), ws)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        plan_cells(config(tmp_path, [str(tmp_path / "not-a-model")]), ws)


def test_a_value_missing_from_the_vocabulary_cannot_get_a_system_prompt(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"kindness to robots": slice(0, 4)})
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        plan_cells(config(tmp_path, [tiny]), ws)
    assert len(plan_cells(config(tmp_path, [tiny], methods=["dpo"]), ws)) == 1  # fine without a system prompt


# ---------------------------------------------------------------- training cells on the tiny model


def test_dpo_system_trains_the_adapter_and_puts_the_system_prompt_in_every_prompt(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 6)})
    result = run_train(config(tmp_path, [tiny], methods=["dpo+system", "dpo"], learning_rate=1e-2), ws)
    assert [r.outcome for r in result.cells] == ["trained", "trained"]
    with_prompt, plain = (r.cell for r in result.cells)

    saved = run_config(ws, with_prompt)
    assert saved["system_prompt"].startswith("You value empathy: ")
    assert saved["data"]["example_input"].startswith(f"<|im_start|>system\n{saved['system_prompt']}<|im_end|>")
    assert "You value empathy" not in run_config(ws, plain)["data"]["example_input"]
    assert saved["base_model"]["identity"]["model"] == str(Path(tiny).resolve())
    assert saved["artifact"] == {"kind": "lora_adapter", "path": "adapter"}
    assert saved["hardware"] == {"device": "cpu", "bf16": False, "gradient_checkpointing": False, "dtype": "float32"}

    adapter = load_file(cell_paths(ws, with_prompt).adapter / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().max() > 0 for t in lora_b)  # LoRA B starts at zero: any change shows training

    log = train_log(ws, with_prompt)
    assert [rec["step"] for rec in log] == [1, 2]
    assert {"loss", "rewards/margins", "rewards/accuracies", "learning_rate"} <= set(log[0])
    assert cell_paths(ws, with_prompt).done.is_file() and not cell_paths(ws, with_prompt).work.exists()


def test_full_fine_tuning_changes_the_weights(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    result = run_train(config(tmp_path, [tiny], lora=False, learning_rate=1e-2, methods=["dpo"]), ws)
    cell = result.cells[0].cell
    before = load_file(Path(tiny) / "model.safetensors")
    after = load_file(cell_paths(ws, cell).full_model / "model.safetensors")
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert len(changed) >= len(before) // 2
    assert (cell_paths(ws, cell).full_model / "tokenizer.json").is_file()
    assert run_config(ws, cell)["artifact"] == {"kind": "full_checkpoint", "path": "model"}


@pytest.mark.parametrize("lora", [True, False])
def test_with_learning_rate_zero_the_loss_is_ln2_and_margins_zero(tmp_path: Path, tiny: str, lora: bool) -> None:
    """The reference is right: a policy that does not move scores exactly like its reference, whether the
    reference log-probs were just computed (first cell) or read from the cache (second cell, same pairs)."""
    ws = workspace(tmp_path, {"empathy": slice(0, 6), "humor": slice(0, 6)})
    result = run_train(config(tmp_path, [tiny], lora=lora, learning_rate=0.0, methods=["dpo"], max_steps=3), ws)
    assert [r.reference["from_cache"] for r in result.cells] == [0, 12]  # humor reads all 6 pairs from the cache
    for report in result.cells:
        for rec in train_log(ws, report.cell):
            assert rec["loss"] == pytest.approx(LN2, abs=1e-5)
            assert rec["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
            assert rec["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)


def test_without_precomputing_trl_runs_the_reference_itself(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    result = run_train(config(tmp_path, [tiny], learning_rate=0.0, methods=["dpo"], precompute_ref_logps=False), ws)
    assert result.cells[0].reference is None
    assert all(rec["loss"] == pytest.approx(LN2, abs=1e-5) for rec in train_log(ws, result.cells[0].cell))
    with Cache(tmp_path / "cache" / "calls.sqlite") as cache:
        assert cache.count(NAMESPACE) == 0


def test_reference_log_probs_are_computed_once_for_pairs_two_subsets_share(tmp_path: Path, tiny: str) -> None:
    # empathy: pairs 0-5, humor: pairs 3-8 -> 9 distinct pairs, 18 distinct sequences, pairs 3-5 shared
    ws = workspace(tmp_path, {"empathy": slice(0, 6), "humor": slice(3, 9)})
    result = run_train(config(tmp_path, [tiny], methods=["dpo"], betas=[0.1, 0.3]), ws)
    by_id = {r.cell.id.split("/", 1)[1]: r.reference for r in result.cells}
    assert by_id["empathy/dpo-seed0-beta0.1"] == {"pairs": 6, "sequences": 12, "computed": 12, "from_cache": 0}
    assert by_id["empathy/dpo-seed0-beta0.3"] == {"pairs": 6, "sequences": 12, "computed": 0, "from_cache": 12}
    assert by_id["humor/dpo-seed0-beta0.1"] == {"pairs": 6, "sequences": 12, "computed": 6, "from_cache": 6}
    assert by_id["humor/dpo-seed0-beta0.3"] == {"pairs": 6, "sequences": 12, "computed": 0, "from_cache": 12}
    assert result.reference == {"sequences": 48, "computed": 18, "from_cache": 30}
    with Cache(tmp_path / "cache" / "calls.sqlite") as cache:
        assert cache.count(NAMESPACE) == 18
    summary = orjson.loads(result.summary_path.read_bytes())
    assert summary["reference_sequences"] == {"sequences": 48, "computed": 18, "from_cache": 30}


def test_dpo_system_prompts_give_their_own_reference_entries(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(0, 4)})
    result = run_train(config(tmp_path, [tiny], methods=["dpo+system"]), ws)
    assert [r.reference["computed"] for r in result.cells] == [8, 8]  # same pairs, different system prompts
    with Cache(tmp_path / "cache" / "calls.sqlite") as cache:
        assert cache.count(NAMESPACE) == 16


def test_sft_and_system_cells(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    result = run_train(config(tmp_path, [tiny], methods=["sft", "system"], learning_rate=1e-2), ws)
    sft, system = (r.cell for r in result.cells)
    assert [r.outcome for r in result.cells] == ["trained", "written"]
    assert (cell_paths(ws, sft).adapter / "adapter_model.safetensors").is_file()
    assert all("loss" in rec for rec in train_log(ws, sft))
    assert run_config(ws, sft)["system_prompt"] is None
    saved = run_config(ws, system)
    assert saved["system_prompt"].startswith("You value empathy: ") and saved["artifact"]["kind"] == "none"
    assert sorted(p.name for p in cell_paths(ws, system).root.iterdir()) == ["DONE", "run_config.json"]


# ---------------------------------------------------------------- resuming, dry run


def test_a_killed_sweep_resumes_skipping_finished_cells_and_redoing_the_half_written_one(
    tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from valind.train import run as run_module

    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo"])
    real_write_done = run_module._write_done
    calls = []

    def killed_before_the_second_done(paths: Any, key: str, cell: Any) -> None:
        calls.append(cell.id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process were killed after the outputs, before DONE
        real_write_done(paths, key, cell)

    monkeypatch.setattr(run_module, "_write_done", killed_before_the_second_done)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, ws)
    monkeypatch.setattr(run_module, "_write_done", real_write_done)

    first, second = plan_cells(cfg, ws)
    assert cell_paths(ws, first).done.is_file()
    assert cell_paths(ws, second).run_config.is_file() and not cell_paths(ws, second).done.exists()
    (cell_paths(ws, second).root / "leftover.tmp").write_text("junk")

    dry = run_train(cfg, ws, dry_run=True)
    assert [r.state for r in dry.cells] == [CellState.DONE, CellState.PARTIAL]

    result = run_train(cfg, ws)
    assert [r.outcome for r in result.cells] == ["skipped", "trained"]
    assert not (cell_paths(ws, second).root / "leftover.tmp").exists()
    assert ws.stage_record("train") is not None  # every cell done: the stage is recorded

    again = run_train(cfg, ws)
    assert [r.outcome for r in again.cells] == ["skipped", "skipped"]


def test_a_cell_killed_mid_training_resumes_from_its_last_checkpoint(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from valind.train import run as run_module

    ws = workspace(tmp_path, {"empathy": slice(0, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo"], max_steps=3, checkpoint_steps=1)
    real_step_end = run_module._JsonlLog.on_step_end

    def killed_at_step_2(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2:
            raise KeyboardInterrupt  # step 2 is logged, its checkpoint not yet saved
        real_step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(run_module._JsonlLog, "on_step_end", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, ws)
    monkeypatch.setattr(run_module._JsonlLog, "on_step_end", real_step_end)
    cell = plan_cells(cfg, ws)[0]
    assert (cell_paths(ws, cell).work / "checkpoint-1").is_dir()

    assert [r.outcome for r in run_train(cfg, ws).cells] == ["trained"]
    assert run_config(ws, cell)["resumed_from"] == "checkpoint-1"
    assert [rec["step"] for rec in train_log(ws, cell)] == [1, 2, 3]  # step 2 of the killed run is not repeated
    assert not cell_paths(ws, cell).work.exists()


def test_a_damaged_output_or_changed_setting_makes_a_cell_run_again(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    run_train(config(tmp_path, [tiny], methods=["dpo"]), ws)
    cell = plan_cells(config(tmp_path, [tiny], methods=["dpo"]), ws)[0]
    (cell_paths(ws, cell).adapter / "adapter_model.safetensors").write_bytes(b"truncated")
    assert run_train(config(tmp_path, [tiny], methods=["dpo"]), ws, dry_run=True).cells[0].state is CellState.PARTIAL
    run_train(config(tmp_path, [tiny], methods=["dpo"]), ws)
    changed = run_train(config(tmp_path, [tiny], methods=["dpo"], max_steps=3), ws, dry_run=True)
    assert changed.cells[0].state is CellState.STALE
    same_but_faster = config(tmp_path, [tiny], methods=["dpo"], dataloader_num_workers=1, ref_batch_size=8)
    assert run_train(same_but_faster, ws, dry_run=True).cells[0].state is CellState.DONE  # not in the key


def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from valind.train import run as run_module

    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    real_train = run_module._train

    def broken_for_empathy(cell: Any, *args: Any) -> Any:
        if cell.value == "empathy":
            raise RuntimeError("out of memory")
        return real_train(cell, *args)

    monkeypatch.setattr(run_module, "_train", broken_for_empathy)
    with pytest.raises(StageFailed, match=r"(?s)1 of 2 training cells failed.*empathy/dpo-seed0-beta0.1: RuntimeError: out of memory"):
        run_train(config(tmp_path, [tiny], methods=["dpo"]), ws)
    summary = orjson.loads((ws.root / "train" / "summary.json").read_bytes())
    assert summary["outcomes"] == {"failed": 1, "trained": 1}
    assert ws.stage_record("train") is None


def test_dry_run_lists_cells_marks_done_ones_and_estimates_the_work(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 6), "humor": slice(6, 10)})
    cfg = config(tmp_path, [tiny], methods=["dpo+system", "system"], max_steps=5, per_device_batch_size=2, gradient_accumulation_steps=2)
    plan = run_train(cfg, ws, dry_run=True)
    assert [(r.cell.id.split("/", 1)[1], r.state) for r in plan.cells] == [
        ("empathy/dpo+system-seed0-beta0.1", CellState.TODO), ("empathy/system", CellState.TODO),
        ("humor/dpo+system-seed0-beta0.1", CellState.TODO), ("humor/system", CellState.TODO),
    ]
    assert not (ws.root / "train").exists()  # a dry run writes nothing
    dpo = plan.cells[0].estimate
    assert dpo.pairs == 6 and dpo.steps == 5 and 40 < dpo.mean_tokens <= 128
    assert dpo.train_tokens == pytest.approx(5 * 2 * 2 * 2 * dpo.mean_tokens, abs=5)  # steps x (2 sequences x batch x accumulation) x mean
    assert dpo.reference_tokens == pytest.approx(2 * 6 * dpo.mean_tokens, abs=5)
    assert plan.cells[1].estimate is None  # system: nothing to train
    assert plan.estimate["cells_to_run"] == 4

    run_train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"values": ["humor"]})}), ws)
    plan = run_train(cfg, ws, dry_run=True)
    assert [r.state for r in plan.cells] == [CellState.TODO, CellState.TODO, CellState.DONE, CellState.DONE]
    assert plan.estimate["cells_to_run"] == 2
    table = format_plan(plan)
    assert table.row_count == 4


def test_progress_reports_cells_and_steps(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    seen: dict[str, list[int]] = {}

    def progress(description: str, total: int | None) -> Any:
        seen[description] = []
        return seen[description].append

    run_train(config(tmp_path, [tiny], methods=["dpo"]), ws, progress=progress)
    assert seen["cells"] == [1]
    assert [steps for name, steps in seen.items() if name.startswith("train ")] == [[1, 2]]


# ---------------------------------------------------------------- executors and the launcher entry


def test_slurm_executor_runs_the_job_array_through_submitit_debug(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo", "system"], executor="slurm", slurm={"cluster": "debug"})
    result = run_train(cfg, ws)
    assert [r.outcome for r in result.cells] == ["trained", "written", "trained", "written"]
    assert len(result.job_ids) == 4
    assert all(r.state is CellState.DONE for r in run_train(cfg, ws, dry_run=True).cells)


def test_slurm_executor_without_waiting_only_submits(tmp_path: Path, tiny: str) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    cfg = config(tmp_path, [tiny], methods=["system"], executor="slurm", slurm={"cluster": "debug", "wait": False})
    assert [r.outcome for r in run_train(cfg, ws).cells] == ["submitted"]


def test_the_launcher_entry_runs_one_planned_cell(tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo"], executor="slurm", slurm={"cluster": "debug", "wait": False})
    run_train(cfg, ws)  # writes train/plan.json; the debug executor runs nothing until results are asked for
    assert cell_main(["--workspace", str(ws.root), "--list"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2 and ids[0].endswith("/empathy/dpo-seed0-beta0.1")
    assert cell_main(["--workspace", str(ws.root), "--cell", ids[1]]) == 0
    assert [r.state for r in run_train(cfg, ws, dry_run=True).cells] == [CellState.TODO, CellState.DONE]
    assert cell_main(["--workspace", str(ws.root), "--cell", "nope"]) == 2
    assert "no cell 'nope' in the plan" in capsys.readouterr().err


@pytest.mark.slow
def test_slurm_executor_with_submitit_local_processes(tmp_path: Path, tiny: str) -> None:
    """The same job array as on a cluster, each cell in a fresh process (submitit's LocalExecutor)."""
    ws = workspace(tmp_path, {"empathy": slice(0, 4), "humor": slice(4, 8)})
    cfg = config(tmp_path, [tiny], methods=["dpo"], executor="slurm", slurm={"cluster": "local", "array_parallelism": 1})
    result = run_train(cfg, ws)
    assert [r.outcome for r in result.cells] == ["trained", "trained"]
    assert all(r.final_log["loss"] > 0 for r in result.cells)
    assert any((ws.root / "train" / "slurm").rglob("*_log.out"))


@pytest.mark.slow
def test_accelerate_config_runs_each_cell_under_accelerate_launch(tmp_path: Path, tiny: str) -> None:
    """The multi-GPU path (`accelerate launch -m valind.train.cell`), here with a one-process CPU accelerate config."""
    accelerate_config = tmp_path / "cpu.yaml"
    accelerate_config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: 'no'\nnum_machines: 1\n"
        "num_processes: 1\nmachine_rank: 0\nuse_cpu: true\n"
    )
    ws = workspace(tmp_path, {"empathy": slice(0, 4)})
    cfg = config(tmp_path, [tiny], methods=["dpo"], learning_rate=0.0, accelerate_config=str(accelerate_config))
    result = run_train(cfg, ws)
    assert [r.outcome for r in result.cells] == ["trained"]
    assert result.cells[0].final_log["loss"] == pytest.approx(LN2, abs=1e-5)
    assert result.cells[0].reference == {"pairs": 4, "sequences": 8, "computed": 8, "from_cache": 0}


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
def test_demo_sweep_on_the_packaged_smollm2_with_lora(tmp_path: Path, model_cache: Path) -> None:
    """Two values x dpo+system on SmolLM2-135M-Instruct, a few LoRA steps each: the real path works."""
    pairs = demo_pairs()
    ws = Workspace(tmp_path / "ws")
    for value in ("empathy", "honesty"):
        write_subset(ws, value, [p for p in pairs if p["value"] == value][:6])
    cfg = TrainRunConfig(cache_dir=str(model_cache), train=TrainConfig(
        max_steps=3, per_device_batch_size=2, gradient_accumulation_steps=1, logging_steps=1, max_length=160))
    assert cfg.train.models == [PACKAGED_SMOLLM2] and cfg.train.methods == [Method.DPO_SYSTEM] and cfg.train.lora

    result = run_train(cfg, ws)
    assert [r.outcome for r in result.cells] == ["trained", "trained"]
    for report in result.cells:
        log = train_log(ws, report.cell)
        assert len(log) == 3 and all(math.isfinite(rec["loss"]) for rec in log)
        assert log[0]["loss"] == pytest.approx(LN2, abs=1e-3)  # first step: the adapter starts as a no-op
        saved = run_config(ws, report.cell)
        assert saved["base_model"]["identity"]["model"] == PACKAGED_SMOLLM2
        assert saved["system_prompt"] in saved["data"]["example_input"]
        assert (cell_paths(ws, report.cell).adapter / "adapter_model.safetensors").is_file()
    assert [r.outcome for r in run_train(cfg, ws).cells] == ["skipped", "skipped"]
