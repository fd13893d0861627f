"""The openai and vllm generation backends: requests and identity against the fault-injecting stand-in
server (fast), the whole stage through it, the vllm wiring against a stand-in vllm module (engines, LoRA
requests, per-request seeds, a failing batch), and real vLLM on a GPU (marked gpu, skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import Field
from servers import Fault, FaultServer

from valind.config import Config
from valind.errors import ConfigError
from valind.extract.llm import CallFailed
from valind.generate import GenerateConfig, run_generate
from valind.generate.base import Completion, GenerationRequest
from valind.generate.cells import CellKind, ModelCell
from valind.generate.openai_backend import OpenAIBackend
from valind.generate.vllm_backend import VLLMBackend
from valind.train import TrainConfig
from valind.workspace import Workspace

if "generate" in Config.model_fields:
    GenRunConfig = Config
else:  # until Config mounts the section: the same Config with a `generate` field

    class GenRunConfig(Config):  # type: ignore[no-redef]
        generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Generate stage settings.")


SENTINEL = "sk-test-SENTINEL-456"
KEY_ENV = "VALIND_TEST_GENERATE_KEY"
BASE = ModelCell("base--org--model", CellKind.BASE, "org/model")


def trained(tmp_path: Path, kind: CellKind = CellKind.ADAPTER, rank: int = 4, label: str = "org--model--humor--dpo-seed0-beta0.1") -> ModelCell:
    """A trained cell whose folder holds just enough to be fingerprinted (adapter_config.json or config.json)."""
    folder = tmp_path / label / ("adapter" if kind is CellKind.ADAPTER else "model")
    folder.mkdir(parents=True)
    (folder / ("adapter_config.json" if kind is CellKind.ADAPTER else "config.json")).write_bytes(orjson.dumps({"r": rank}))
    return ModelCell(label, kind, "org/model", folder, "You value humor: ...", "humor", "dpo", label)


def requests(n: int, seed: int = 0) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"question {i}"}], 0, seed + i) for i in range(n)]


# ---------------------------------------------------------------- openai


def openai(base_url: str | None, cells: list[ModelCell], **settings: Any) -> OpenAIBackend:
    defaults = {"timeout_s": 5.0, "request_retries": 0, "concurrency": 4, "api_key_env": KEY_ENV, "max_new_tokens": 32}
    return OpenAIBackend(GenerateConfig(backend="openai", base_url=base_url, **{**defaults, **settings}), cells)


def test_openai_needs_a_url_and_known_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generate.base_url"):
        openai(None, [BASE])
    with pytest.raises(ConfigError, match="no cell is labelled 'base--org--modl'"):
        openai("http://127.0.0.1:1/v1", [BASE], model_names={"base--org--modl": "m"})


def test_openai_requests_carry_the_served_name_and_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    adapter, renamed = trained(tmp_path), trained(tmp_path, label="org--model--empathy--dpo-seed0-beta0.1")
    with FaultServer() as server:
        greedy = openai(server.base_url, [BASE, adapter, renamed], model_names={renamed.label: "empathy-lora"})
        answers = greedy.open(BASE).generate(requests(2))
        greedy.open(adapter).generate(requests(1))
        greedy.open(renamed).generate(requests(1))
        openai(server.base_url, [BASE], temperature=0.7, top_p=0.9, n_samples=2).open(BASE).generate(requests(1, seed=42))
    bodies = [r.body for r in server.received]
    assert [b["model"] for b in bodies] == ["org/model", "org/model", adapter.label, "empathy-lora", "org/model"]
    assert bodies[0]["max_tokens"] == 32 and bodies[0]["temperature"] == 0.0 and "seed" not in bodies[0] and "top_p" not in bodies[0]
    assert (bodies[-1]["seed"], bodies[-1]["top_p"], bodies[-1]["temperature"]) == (42, 0.9, 0.7)
    assert all(isinstance(a, Completion) and a.finish_reason == "stop" and a.tokens == 1 for a in answers)
    assert {r.authorization for r in server.received} == {f"Bearer {SENTINEL}"}
    ident = greedy.identity(adapter)
    assert ident["model"] == adapter.label and ident["artifact"] and ident["base_url"] == server.base_url
    assert SENTINEL not in orjson.dumps(ident).decode() and "artifact" not in greedy.identity(BASE)


def test_openai_a_failed_request_fails_alone(tmp_path: Path) -> None:
    with FaultServer([Fault.ERROR_500]) as server:
        out = openai(server.base_url, [BASE], concurrency=1).open(BASE).generate(requests(3))
    assert isinstance(out[0], CallFailed) and str(out[0]).startswith("http 500")
    assert all(isinstance(a, Completion) for a in out[1:])


def test_openai_through_the_stage_and_the_cache(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as server:
        cfg = GenRunConfig(cache_dir=str(tmp_path / "cache"), train=TrainConfig(models=["org/model"]),
                           generate=GenerateConfig(backend="openai", base_url=server.base_url, max_prompts_per_suite=3,
                                                   request_retries=0, api_key_env=KEY_ENV))
        result = run_generate(cfg, ws)
        assert result.model_calls == 9 and server.requests == 9
        ws.generate_file("base--org--model", "unsafe").unlink()
        again = run_generate(cfg, ws)
        assert server.requests == 9 and again.reused == 3  # the lost file came back from the cache
    got = pq.read_table(ws.generate_file("base--org--model", "unsafe")).to_pylist()
    assert [r["status"] for r in got] == ["ok"] * 3 and all(r["tokens"] == 1 for r in got)


# ---------------------------------------------------------------- vllm against a stand-in module


class FakeLLM:
    """Records its settings and calls; answers '<lora name or base>: <last user message>'."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        FakeLLM.instances.append(self)

    def chat(self, conversations: list[list[dict[str, str]]], sampling_params: Any, lora_request: Any = None,
             use_tqdm: bool = True) -> list[Any]:
        self.calls.append({"n": len(conversations), "params": sampling_params, "lora": lora_request})
        if any("TOO LONG" in conv[-1]["content"] for conv in conversations):
            raise ValueError("The decoder prompt (length 99999) is longer than the maximum model length of 8192")
        who = lora_request.lora_name if lora_request else "base"
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{who}: {conv[-1]['content']}", finish_reason="length",
                                                                     token_ids=[1, 2, 3])]) for conv in conversations]


class Kwargs:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = type("SamplingParams", (Kwargs,), {})
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = type("LoRARequest", (), {"__init__": lambda self, **kw: self.__dict__.update(kw)})
    parallel = types.ModuleType("vllm.distributed.parallel_state")
    parallel.destroyed = []
    parallel.destroy_model_parallel = lambda: parallel.destroyed.append("model_parallel")
    parallel.destroy_distributed_environment = lambda: parallel.destroyed.append("distributed")
    for name, module in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request,
                         "vllm.distributed": types.ModuleType("vllm.distributed"), "vllm.distributed.parallel_state": parallel}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    FakeLLM.instances = []
    return parallel


def vllm_backend(tmp_path: Path, cells: list[ModelCell], **settings: Any) -> VLLMBackend:
    return VLLMBackend(GenerateConfig(backend="vllm", max_new_tokens=16, **settings), tmp_path / "cache", cells)


def test_vllm_without_the_package_or_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU and `pip install vllm` \(import failed"):
        vllm_backend(tmp_path, [BASE])


def test_vllm_one_engine_per_base_and_lora_requests_per_cell(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    adapter = trained(tmp_path, rank=12)
    system = ModelCell("org--model--humor--system", CellKind.SYSTEM, "org/model", None, "You value humor: ...", "humor", "system")
    full = trained(tmp_path, CellKind.FULL, label="org--model--humor--sft-seed0")
    backend = vllm_backend(tmp_path, [BASE, adapter, system, full], gpu_memory_utilization=0.5, seed=3)

    base_out = backend.open(BASE).generate(requests(2))
    adapter_out = backend.open(adapter).generate(requests(1))
    backend.open(system).generate(requests(1))
    assert len(FakeLLM.instances) == 1  # base, adapter and system cells share one engine
    engine = FakeLLM.instances[0]
    assert engine.kwargs == {"model": "org/model", "revision": None, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.5,
                             "enable_prefix_caching": True, "seed": 3, "enable_lora": True, "max_lora_rank": 16, "max_loras": 1}
    assert [c["lora"] is None for c in engine.calls] == [True, False, True]
    lora = engine.calls[1]["lora"]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == (adapter.label, 1, str(adapter.path))
    assert base_out[0] == Completion("base: question 0", "length", 3) and adapter_out[0].text.startswith(adapter.label)
    params = engine.calls[0]["params"]
    assert [p.kwargs for p in params] == [{"temperature": 0.0, "max_tokens": 16}] * 2

    backend.open(full).generate(requests(1))
    assert len(FakeLLM.instances) == 2 and fake_vllm.destroyed == ["model_parallel", "distributed"]
    assert FakeLLM.instances[1].kwargs["model"] == str(full.path.resolve()) and "enable_lora" not in FakeLLM.instances[1].kwargs
    assert backend.identity(adapter)["adapter"] and backend.identity(BASE) == {
        "backend": "vllm", "model": "org/model", "revision": "unpinned", "max_new_tokens": 16, "temperature": 0.0}


def test_vllm_sampling_seeds_each_request(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    backend = vllm_backend(tmp_path, [BASE], temperature=0.7, top_p=0.9, n_samples=2)
    backend.open(BASE).generate(requests(2, seed=100))
    params = FakeLLM.instances[0].calls[0]["params"]
    assert [p.kwargs for p in params] == [{"temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 100 + i} for i in range(2)]
    assert "enable_lora" not in FakeLLM.instances[0].kwargs


def test_vllm_a_failing_batch_is_sent_again_one_at_a_time(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    reqs = requests(3)
    reqs[1] = GenerationRequest([{"role": "user", "content": "TOO LONG " * 10}], 0, 0)
    out = vllm_backend(tmp_path, [BASE]).open(BASE).generate(reqs)
    assert [c["n"] for c in FakeLLM.instances[0].calls] == [3, 1, 1, 1]
    assert isinstance(out[1], CallFailed) and "longer than the maximum model length" in str(out[1])
    assert isinstance(out[0], Completion) and isinstance(out[2], Completion)


def test_vllm_an_adapter_rank_above_what_vllm_takes_is_an_error(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LoRA rank 1024"):
        vllm_backend(tmp_path, [BASE, trained(tmp_path, rank=1024)])


# ---------------------------------------------------------------- the real thing


def _vllm_missing() -> bool:
    return importlib.util.find_spec("vllm") is None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the vllm backend runs only on GPUs)")
@pytest.mark.skipif(_vllm_missing(), reason="vllm is not installed (`pip install vllm` on a machine with a CUDA GPU)")
def test_vllm_generates_with_a_lora_adapter_on_gpu(tmp_path_factory: pytest.TempPathFactory) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from valind.models import PACKAGED_SMOLLM2, resolve_model

    cache = tmp_path_factory.getbasetemp() / "valind-model-cache"
    cache.mkdir(exist_ok=True)
    base_path = resolve_model(PACKAGED_SMOLLM2, cache).path_or_name
    adapter_dir = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(adapter_dir)
    base = ModelCell("base--smollm2", CellKind.BASE, PACKAGED_SMOLLM2)
    adapter = ModelCell("smollm2--humor--dpo", CellKind.ADAPTER, PACKAGED_SMOLLM2, adapter_dir)
    backend = VLLMBackend(GenerateConfig(backend="vllm", max_new_tokens=24, gpu_memory_utilization=0.3), cache, [base, adapter])
    try:
        prompts = [GenerationRequest([{"role": "user", "content": q}]) for q in ("Hi", "What is the capital of France?")]
        base_out = backend.open(base).generate(prompts)
        adapter_out = backend.open(adapter).generate(prompts)
    finally:
        backend.close()
    assert all(isinstance(a, Completion) and a.text for a in base_out + adapter_out)
    assert "Paris" in base_out[1].text and base_out != adapter_out
