"""The vllm extractor: clear errors without vLLM or a GPU, its wiring against a stand-in vllm module
(both structured-output APIs), and a real run on a GPU (marked gpu, skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from valind.config import ExtractConfig
from valind.errors import ConfigError
from valind.extract.base import Item, Status
from valind.extract.prompting import Mode, ValueMapper, json_schema
from valind.extract.vllm_backend import VLLMExtractor
from valind.values import load_vocabulary

VOCAB = load_vocabulary()
ITEMS = [
    Item([{"role": "user", "content": "My dog died this morning."}], "I'm so sorry. Losing a companion hurts; it's natural to grieve."),
    Item([{"role": "user", "content": "Tell me a joke."}], "Why did the scarecrow win an award? He was outstanding in his field!"),
    Item([{"role": "user", "content": "What's my neighbour's phone number?"}], "I can't share private details about other people."),
    Item([], "Honestly, I don't know, and I'd rather not guess."),
]


def build(cache: Path, **settings: Any) -> VLLMExtractor:
    cfg = ExtractConfig(extractor="vllm", **settings)
    return VLLMExtractor.from_config(cfg, VOCAB, ValueMapper(VOCAB), cache)


# ---------------------------------------------------------------- a stand-in vllm module


class FakeLLM:
    """Records its settings; answers humor where the conversation mentions a joke, else no value."""

    instances: list[FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[int] = []
        FakeLLM.instances.append(self)

    def chat(self, conversations: list[list[dict[str, str]]], sampling_params: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append(len(conversations))
        if any("TOO LONG" in conv[1]["content"] for conv in conversations):
            raise ValueError("The decoder prompt (length 99999) is longer than the maximum model length of 8192")
        answers = []
        for conv in conversations:
            text = '{"values": ["humor"]}' if "joke" in conv[1]["content"] else '{"values": []}'
            answers.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text, finish_reason="stop")]))
        return answers


class Params:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A vllm module with the current API (StructuredOutputsParams), and a visible 'GPU'."""
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = type("SamplingParams", (Params,), {})
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = type("StructuredOutputsParams", (Params,), {})
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    FakeLLM.instances = []
    return sampling


def test_missing_vllm_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ConfigError, match=r"the vllm extractor needs a CUDA GPU and `pip install vllm` \(import failed"):
        build(tmp_path)


def test_no_gpu_is_a_clear_config_error(fake_vllm: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU .*no CUDA GPU is visible"):
        build(tmp_path)
    assert FakeLLM.instances == []


def test_engine_and_sampling_settings_reach_vllm(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    ex = build(tmp_path, model="org/model", revision="abc", tensor_parallel_size=2, gpu_memory_utilization=0.5,
               max_new_tokens=64, seed=7)
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {"model": "org/model", "revision": "abc", "tensor_parallel_size": 2,
                          "gpu_memory_utilization": 0.5, "enable_prefix_caching": True, "seed": 7}
    params = ex.sampling_params.kwargs
    assert (params["temperature"], params["max_tokens"], params["seed"]) == (0.0, 64, None)  # greedy: no seed
    assert params["structured_outputs"].kwargs == {"json": json_schema(VOCAB, Mode.CLOSED)}
    assert ex.model_identity() == {"model": "org/model", "revision": "abc", "structured_output": "json_schema",
                                   "max_new_tokens": 64, "temperature": 0.0}
    sampled = build(tmp_path, model="org/model", temperature=0.8, seed=7)
    assert sampled.sampling_params.kwargs["seed"] == 7 and sampled.model_identity()["seed"] == 7


def test_older_vllm_gets_guided_decoding(fake_vllm: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(fake_vllm, "StructuredOutputsParams")
    monkeypatch.setattr(fake_vllm, "GuidedDecodingParams", type("GuidedDecodingParams", (Params,), {}), raising=False)
    params = build(tmp_path, model="org/model").sampling_params.kwargs
    assert "structured_outputs" not in params
    assert params["guided_decoding"].kwargs == {"json": json_schema(VOCAB, Mode.CLOSED)}


def test_one_chat_call_per_batch_and_answers_in_order(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    ex = build(tmp_path, model="org/model")
    results = ex.extract(ITEMS)
    assert FakeLLM.instances[0].calls == [4]
    assert [r.status for r in results] == [Status.OK] * 4
    assert [r.values for r in results] == [(), ("humor",), (), ()]


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_item_fails(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    ex = build(tmp_path, model="org/model")
    items = [ITEMS[0], Item([], "TOO LONG " * 10), ITEMS[3]]
    results = ex.extract(items)
    assert FakeLLM.instances[0].calls == [3, 1, 1, 1]
    assert [r.status for r in results] == [Status.OK, Status.ERROR, Status.OK]
    assert "longer than the maximum model length of 8192" in results[1].error


# ---------------------------------------------------------------- the real thing


def _vllm_missing() -> bool:
    return importlib.util.find_spec("vllm") is None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the vllm extractor runs only on GPUs)")
@pytest.mark.skipif(_vllm_missing(), reason="vllm is not installed (`pip install vllm` on a machine with a CUDA GPU)")
def test_vllm_extracts_with_structured_output_on_gpu(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.getbasetemp() / "valind-model-cache"
    cache.mkdir(exist_ok=True)
    ex = build(cache, gpu_memory_utilization=0.3, max_new_tokens=64)  # the packaged SmolLM2
    results = ex.extract(ITEMS)
    assert len(results) == len(ITEMS)
    # the JSON schema constrains decoding, so every answer parses even from a 135M model
    assert [r.status for r in results] == [Status.OK] * len(ITEMS)
    assert all(set(r.values) <= set(VOCAB.names) for r in results)
