"""The hf generation backend on real models: the tiny random Llama (seconds) for batching, left padding,
EOS, seeded sampling, LoRA adapters and full checkpoints; a real sweep (tiny model trained by the train
stage) through the generate stage; and the packaged SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import Field

from valind.config import Config
from valind.generate import GenerateConfig, model_cells, run_generate
from valind.generate.base import Completion, GenerationRequest
from valind.generate.cells import CellKind, ModelCell
from valind.generate.hf import HFBackend, HFGenerator
from valind.models import PACKAGED_SMOLLM2
from valind.schema import PROMPT_TYPE
from valind.train import TrainConfig, run_train
from valind.workspace import Workspace

if "generate" in Config.model_fields:
    GenRunConfig = Config
else:  # until Config mounts the section: the same Config with a `generate` field

    class GenRunConfig(Config):  # type: ignore[no-redef]
        generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Generate stage settings.")


DEMO = Path(__file__).resolve().parents[1] / "src" / "valind" / "data" / "demo" / "pairs.jsonl"
PROMPTS = ["Hi", "Write a long and careful answer about the history of tea in China and Japan.", "What is two plus two?"]


def chat(text: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]




def backend(cache: Path, **settings: Any) -> HFBackend:
    return HFBackend(GenerateConfig(**{"max_new_tokens": 8, **settings}), cache)


def base_cell(spec: str) -> ModelCell:
    return ModelCell("base", CellKind.BASE, spec)


def ask(gen: HFGenerator, prompts: list[str] = PROMPTS, seeds: list[int] | None = None) -> list[Any]:
    return gen.generate([GenerationRequest(chat(p), 0, s) for p, s in zip(prompts, seeds or [0] * len(prompts))])


# ---------------------------------------------------------------- the tiny random Llama (seconds)


def test_batched_greedy_equals_one_at_a_time(tiny: str, model_cache: Path) -> None:
    batched = ask(backend(model_cache, batch_size=3).open(base_cell(tiny)))
    single = ask(backend(model_cache, batch_size=1).open(base_cell(tiny)))
    assert all(isinstance(a, Completion) and a.text and a.tokens == 8 and a.finish_reason == "length" for a in batched)
    assert batched == single


def test_prompts_are_left_padded(tiny: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = backend(model_cache, batch_size=2).open(base_cell(tiny))
    model = gen.batcher.model
    seen: list[dict[str, Any]] = []
    real = model.generate

    def spy(**kw: Any) -> Any:
        seen.append(kw)
        return real(**kw)

    monkeypatch.setattr(model, "generate", spy)
    ask(gen, ["Hi", "Write a long and careful answer about the history of tea."])
    (call,) = seen
    mask, ids = call["attention_mask"], call["input_ids"]
    pad = gen.batcher.tokenizer.pad_token_id
    short = int(mask[0].sum())
    assert gen.batcher.tokenizer.padding_side == "left" and short < mask.shape[1]
    assert mask[0, : mask.shape[1] - short].sum() == 0 and mask[0, -short:].all() and mask[1].all()
    assert (ids[0, : mask.shape[1] - short] == pad).all()
    # the model's own sampling defaults are switched off: decoding is exactly greedy
    assert call["do_sample"] is False and call["repetition_penalty"] == 1.0


def test_generation_stops_at_eos_and_drops_it(tiny: str, model_cache: Path) -> None:
    gen = backend(model_cache, max_new_tokens=6, batch_size=3).open(base_cell(tiny))
    full = ask(gen)
    tok = gen.batcher.tokenizer
    first = tok(full[0].text, add_special_tokens=False)["input_ids"][0]  # the first token the model answers "Hi" with
    gen.batcher.eos_ids.append(first)
    stopped = ask(gen)
    assert stopped[0] == Completion("", "stop", 0)
    for before, after in zip(full[1:], stopped[1:]):
        ids = tok(before.text, add_special_tokens=False)["input_ids"]
        if first in ids:  # cut where the new end-of-sequence id first appears, padding after it dropped
            assert after.finish_reason == "stop" and after.tokens < 6
        else:
            assert after == before


def test_sampling_is_seeded_per_request_and_independent_of_the_batch(tiny: str, model_cache: Path) -> None:
    settings = {"temperature": 1.0, "top_p": 0.95, "n_samples": 2}
    state = torch.random.get_rng_state()
    batched = ask(backend(model_cache, batch_size=3, **settings).open(base_cell(tiny)), seeds=[11, 12, 13])
    assert torch.equal(torch.random.get_rng_state(), state)
    single = ask(backend(model_cache, batch_size=1, **settings).open(base_cell(tiny)), seeds=[11, 12, 13])
    assert batched == single
    same_prompt = ask(backend(model_cache, **settings).open(base_cell(tiny)), ["Hi"] * 3, seeds=[1, 2, 3])
    assert len({a.text for a in same_prompt}) == 3  # n samples of one prompt differ
    greedy = ask(backend(model_cache).open(base_cell(tiny)), ["Hi"] * 2, seeds=[1, 2])
    assert greedy[0] == greedy[1]


def make_adapter(tiny: str, dest: Path) -> Path:
    """A LoRA adapter of the tiny model with non-zero weights (so it changes the output)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 2.0)
    peft_model.save_pretrained(dest)
    return dest


def test_a_lora_adapter_loads_changes_the_answers_and_comes_off_again(tiny: str, model_cache: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny, tmp_path / "adapter")
    hf = backend(model_cache, max_new_tokens=6)
    base_answers = ask(hf.open(base_cell(tiny)))
    cell = ModelCell("tiny--humor--dpo-seed0-beta0.1", CellKind.ADAPTER, tiny, adapter)
    gen = hf.open(cell)
    from peft import PeftModel

    assert isinstance(gen.batcher.model, PeftModel)
    assert ask(gen) != base_answers
    assert hf.identity(cell)["adapter"] and hf.identity(cell)["fingerprint"] == hf.identity(base_cell(tiny))["fingerprint"]
    assert ask(hf.open(base_cell(tiny))) == base_answers  # the adapter is off the shared base again
    hf.close()


def test_a_full_checkpoint_is_its_own_model(tiny: str, model_cache: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "model")
    hf = backend(model_cache)
    cell = ModelCell("full", CellKind.FULL, tiny, tmp_path / "model")
    assert hf.identity(cell)["model"] == str((tmp_path / "model").resolve())
    assert ask(hf.open(cell)) != ask(hf.open(base_cell(tiny)))


# ---------------------------------------------------------------- a trained sweep through the stage


def write_subset(ws: Workspace, value: str, n: int) -> None:
    pairs = [orjson.loads(line) for line in DEMO.read_bytes().splitlines() if line.strip()][:n]
    table = pa.Table.from_pylist([
        {"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
         "rejected": [{"role": "assistant", "content": p["rejected"]}], "pair_id": f"{i:032x}", "source": "demo", "flipped": False}
        for i, p in enumerate(pairs)
    ], schema=pa.schema([("prompt", PROMPT_TYPE), ("chosen", PROMPT_TYPE), ("rejected", PROMPT_TYPE),
                         ("pair_id", pa.string()), ("source", pa.string()), ("flipped", pa.bool_())]))
    path = ws.subset_file(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_trained_cells_answer_with_their_system_prompt(tiny: str, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    write_subset(ws, "legal awareness", 4)
    train = TrainConfig(models=[tiny], methods=["dpo+system", "system", "sft"], max_steps=1, per_device_batch_size=2,
                        gradient_accumulation_steps=1, max_length=128, learning_rate=1e-2)
    cfg = GenRunConfig(cache_dir=str(tmp_path / "cache"), train=train,
                       generate=GenerateConfig(max_new_tokens=4, max_prompts_per_suite=3, suites=["value_elicitation", "unsafe"]))
    assert [c.kind for c in model_cells(cfg, ws)] == [CellKind.BASE]  # nothing trained yet: only the base model
    run_train(cfg, ws)

    cells = model_cells(cfg, ws)
    tiny_dir = cells[0].label.removeprefix("base--")
    assert [(c.label, c.kind) for c in cells] == [
        (f"base--{tiny_dir}", CellKind.BASE),
        (f"{tiny_dir}--legal_awareness--dpo+system-seed0-beta0.1", CellKind.ADAPTER),
        (f"{tiny_dir}--legal_awareness--system", CellKind.SYSTEM),
        (f"{tiny_dir}--legal_awareness--sft-seed0", CellKind.ADAPTER),
    ]
    base, dpo_system, system, sft = cells
    assert dpo_system.system_prompt and dpo_system.system_prompt.startswith("You value legal awareness: ")
    assert system.system_prompt == dpo_system.system_prompt and sft.system_prompt is None and base.system_prompt is None
    assert dpo_system.path is not None and (dpo_system.path / "adapter_config.json").is_file()

    result = run_generate(cfg, ws)
    assert result.failed == 0 and len(result.files) == 4 * 2
    for cell in cells:
        got = pq.read_table(ws.generate_file(cell.label, "value_elicitation")).to_pylist()
        assert len(got) == 3 and {r["status"] for r in got} == {"ok"}
        for r in got:
            if cell.system_prompt:
                assert r["prompt"][0] == {"role": "system", "content": cell.system_prompt}
            else:
                assert [m["role"] for m in r["prompt"]] == ["user"]
    # the system cell is the base model under a system prompt: same weights, other messages
    base_rows = pq.read_table(ws.generate_file(base.label, "unsafe")).to_pylist()
    assert len(base_rows) == 3

    second = run_generate(cfg, ws)
    assert second.skipped and second.model_calls == 0


# ---------------------------------------------------------------- the packaged SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_batched_equals_single_and_stops_at_eos(model_cache: Path) -> None:
    prompts = ["Hi", "What is the capital of France?", "Name a fruit that is yellow and long."]
    start = time.perf_counter()
    batched = ask(backend(model_cache, max_new_tokens=16, batch_size=3).open(base_cell(PACKAGED_SMOLLM2)), prompts)
    single = ask(backend(model_cache, max_new_tokens=16, batch_size=1).open(base_cell(PACKAGED_SMOLLM2)), prompts)
    print(f"SmolLM2 3 prompts x 16 tokens, batched + one at a time: {time.perf_counter() - start:.1f} s")
    assert batched == single
    hi = batched[0]
    assert hi.finish_reason == "stop" and 0 < hi.tokens < 16 and "<|im_end|>" not in hi.text  # a short greeting, then EOS
    assert "Paris" in batched[1].text


@pytest.mark.slow
def test_smollm2_generate_stage_on_a_small_run(tmp_path: Path, model_cache: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    cfg = GenRunConfig(cache_dir=str(model_cache), train=TrainConfig(models=[PACKAGED_SMOLLM2]),
                       generate=GenerateConfig(max_new_tokens=16, max_prompts_per_suite=2, batch_size=6))
    start = time.perf_counter()
    result = run_generate(cfg, ws)
    print(f"SmolLM2 generate stage, 3 suites x 2 prompts x 16 tokens: {time.perf_counter() - start:.1f} s")
    assert result.failed == 0 and result.model_calls == 6
    got = pq.read_table(ws.generate_file("base--smollm2-135m-instruct", "safe_sensitive")).to_pylist()
    assert all(r["text"] and r["finish_reason"] in ("stop", "length") for r in got)
