"""The hf extractor: the shared retry and parse logic (stub generate), batching and failures on the tiny
random Llama, and real extraction with the packaged SmolLM2 (slow)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from valind.config import ExtractConfig
from valind.extract.base import Item, Status
from valind.extract.hf import HFExtractor
from valind.extract.llm import CallFailed, ChatExtractor
from valind.extract.prompting import ValueMapper
from valind.models import PACKAGED_SMOLLM2, tiny_model
from valind.schema import Message
from valind.values import Vocabulary, load_vocabulary

VOCAB = load_vocabulary()
# A short list keeps the instruction (and so the CPU time per item) small in the real-model tests.
SMALL_VOCAB = Vocabulary(name="small", values=tuple(v for v in VOCAB.values if v.name in {"empathy", "honesty", "humor", "discretion"}))

ITEMS = [
    Item([{"role": "user", "content": "My dog died this morning."}], "I'm so sorry. Losing a companion hurts; it's natural to grieve."),
    Item([{"role": "user", "content": "Tell me a joke."}], "Why did the scarecrow win an award? He was outstanding in his field!"),
    Item([{"role": "user", "content": "What's my neighbour's phone number?"}], "I can't share private details about other people."),
    Item([], "Honestly, I don't know, and I'd rather not guess."),
]


def chat(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="session")
def tiny_path(model_cache: Path) -> Path:
    return tiny_model(model_cache)


def hf(model: str | Path, cache: Path, vocab: Vocabulary = VOCAB, **settings: Any) -> HFExtractor:
    cfg = ExtractConfig(extractor="hf", model=str(model), **settings)
    return HFExtractor.from_config(cfg, vocab, ValueMapper(vocab), cache)


# ---------------------------------------------------------------- retry and parse (no model)


class Scripted(ChatExtractor):
    """Answers from a script: one list of answers per generate call; records what it was asked."""

    name = "scripted"

    def __init__(self, script: list[list[str | CallFailed]], **kw: Any) -> None:
        super().__init__(VOCAB, **kw)
        self.script = list(script)
        self.asked: list[list[list[Message]]] = []

    def generate(self, conversations: list[list[Message]]) -> list[str | CallFailed]:
        self.asked.append(conversations)
        answers = self.script.pop(0)
        assert len(answers) == len(conversations)
        return answers

    def model_identity(self) -> dict[str, Any]:
        return {"model": "scripted"}


def test_an_unparsable_answer_is_asked_again_with_a_repair_turn() -> None:
    ex = Scripted([["Empathy, mostly.", '{"values": ["empathy"]}'], ['```json\n{"values": ["Humor", "wit", "zest"]}\n```']])
    first, second = ex.extract(ITEMS[:2])
    assert second.values == ("empathy",) and second.status is Status.OK
    assert first.status is Status.OK and first.values == ("humor",)  # 'wit' is an alias of humor
    assert first.unmapped == ("zest",)
    assert [len(batch) for batch in ex.asked] == [2, 1]
    retried = ex.asked[1][0]
    assert [m["role"] for m in retried] == ["system", "user", "assistant", "user"]
    assert retried[2]["content"] == "Empathy, mostly." and "required form" in retried[3]["content"]


def test_parse_errors_are_kept_with_the_raw_answer_after_the_last_retry() -> None:
    ex = Scripted([["no json"], ["still none"], ['{"values": "empathy"}']], max_retries=2)
    (result,) = ex.extract(ITEMS[:1])
    assert result.status is Status.PARSE_ERROR
    assert result.raw == '{"values": "empathy"}' and result.values == ()
    assert result.error == 'expected {"values": [strings]} (attempt 3)'
    assert len(ex.asked) == 3


def test_failed_calls_are_errors_and_not_retried() -> None:
    ex = Scripted([[CallFailed("RuntimeError: out of memory"), '{"values": []}']])
    failed, empty = ex.extract(ITEMS[:2])
    assert failed.status is Status.ERROR and failed.error == "RuntimeError: out of memory"
    assert empty.status is Status.OK and empty.values == ()
    assert len(ex.asked) == 1


# ---------------------------------------------------------------- HFExtractor on the tiny random Llama (seconds)


def test_from_config_identity_has_model_and_decoding_but_not_batching(tiny_path: Path, model_cache: Path) -> None:
    greedy = hf(tiny_path, model_cache, max_new_tokens=8, batch_size=2)
    ident = greedy.identity()
    assert ident["backend"] == "hf" and ident["model"] == str(tiny_path.resolve()) and ident["fingerprint"]
    assert (ident["dtype"], ident["max_new_tokens"], ident["temperature"]) == ("float32", 8, 0.0)
    assert "seed" not in ident and "batch_size" not in ident
    assert greedy.tokenizer.padding_side == "left"
    assert greedy.generate([]) == []
    assert hf(tiny_path, model_cache, max_new_tokens=8, batch_size=7).identity() == ident
    sampled = hf(tiny_path, model_cache, max_new_tokens=8, temperature=0.7, seed=3).identity()
    assert (sampled["temperature"], sampled["seed"]) == (0.7, 3)


def test_batched_greedy_generation_equals_one_at_a_time_on_the_tiny_model(tiny_path: Path, model_cache: Path) -> None:
    convs = [chat("Hi"), chat("Write a long and careful answer about the history of tea in China and Japan."),
             chat("What is two plus two?")]
    batched = hf(tiny_path, model_cache, max_new_tokens=12, batch_size=3).generate(convs)
    single = hf(tiny_path, model_cache, max_new_tokens=12, batch_size=1).generate(convs)
    assert all(isinstance(a, str) and a for a in batched)
    assert batched == single


def test_a_model_exception_fails_every_item_of_its_batch_only(tiny_path: Path, model_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ex = hf(tiny_path, model_cache, max_new_tokens=8, batch_size=2)
    real_generate = ex.model.generate
    calls = []

    def flaky(**kw: Any) -> Any:
        calls.append(kw["input_ids"].shape[0])
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_generate(**kw)

    monkeypatch.setattr(ex.model, "generate", flaky)
    # sorted by prompt length, the two shortest form the first (failing) batch
    out = ex.generate([chat("a " * 40), chat("b"), chat("c c")])
    assert calls == [2, 1]
    assert isinstance(out[1], CallFailed) and str(out[1]) == "RuntimeError: boom"
    assert isinstance(out[2], CallFailed) and str(out[2]) == "RuntimeError: boom"
    assert isinstance(out[0], str)


def test_a_prompt_too_long_for_the_context_fails_alone_without_a_model_call(tiny_path: Path, model_cache: Path) -> None:
    ex = hf(tiny_path, model_cache, max_new_tokens=8, batch_size=4)
    ex.tokenizer.model_max_length = 64
    long, short = ex.generate([chat("word " * 100), chat("hi")])
    assert isinstance(long, CallFailed) and "no room for 8 new tokens in the model's context of 64" in str(long)
    assert isinstance(short, str)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_path: Path, model_cache: Path) -> None:
    convs = [chat("Hi"), chat("Name a colour.")]
    ex = hf(tiny_path, model_cache, max_new_tokens=8, temperature=1.0, seed=3)
    state = torch.random.get_rng_state()
    first = ex.generate(convs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ex.generate(convs) == first
    assert hf(tiny_path, model_cache, max_new_tokens=8, temperature=1.0, seed=4).generate(convs) != first


# ---------------------------------------------------------------- the packaged SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_extracts_one_result_per_item_with_retries(model_cache: Path) -> None:
    """A 135M model often answers outside the JSON form: the retry path must run and stay honest."""
    ex = hf(PACKAGED_SMOLLM2, model_cache, SMALL_VOCAB, max_new_tokens=48, batch_size=4, max_retries=1)
    sizes: list[int] = []
    real_generate = ex.generate

    def counting(conversations: list[list[Message]]) -> list[str | CallFailed]:
        sizes.append(len(conversations))
        return real_generate(conversations)

    ex.generate = counting  # type: ignore[method-assign]
    start = time.perf_counter()
    results = ex.extract(ITEMS)
    elapsed = time.perf_counter() - start
    print(f"4-item extraction with SmolLM2-135M on CPU: {elapsed:.1f} s, generate calls {sizes}")
    assert len(results) == len(ITEMS)
    assert {r.status for r in results} <= {Status.OK, Status.PARSE_ERROR}
    assert all(r.raw for r in results)
    for r in results:
        assert set(r.values) <= set(SMALL_VOCAB.names)
        if r.status is Status.PARSE_ERROR:
            assert r.error.endswith("(attempt 2)")  # asked again once before giving up
    failed_first = sizes[1] if len(sizes) > 1 else 0
    assert sizes[0] == 4 and len(sizes) == (2 if failed_first else 1)


@pytest.mark.slow
def test_smollm2_batched_greedy_generation_equals_one_at_a_time(model_cache: Path) -> None:
    convs = [chat("What is the capital of France?"),
             [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a fruit that is yellow and long."}],
             chat("Hi")]
    batched = hf(PACKAGED_SMOLLM2, model_cache, max_new_tokens=10, batch_size=3).generate(convs)
    single = hf(PACKAGED_SMOLLM2, model_cache, max_new_tokens=10, batch_size=1).generate(convs)
    assert all(isinstance(a, str) and a.strip() for a in batched)
    assert batched == single
    assert "Paris" in batched[0]
