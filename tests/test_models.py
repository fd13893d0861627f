"""Where models come from: the packaged SmolLM2 conversion, local folders, Hub names, the tiny test model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from valind import models
from valind.errors import ConfigError
from valind.models import PACKAGED_SMOLLM2, ModelRef, convert_gguf, folder_fingerprint, resolve_model, tiny_model


@pytest.fixture(scope="session")
def smollm2(model_cache: Path) -> ModelRef:
    return resolve_model(PACKAGED_SMOLLM2, model_cache)


# ---------------------------------------------------------------- fast: no model weights


def test_hub_name_is_kept_with_its_revision(tmp_path: Path) -> None:
    ref = resolve_model("mistralai/Mistral-7B-Instruct-v0.3", tmp_path, "abc123")
    assert ref == ModelRef("mistralai/Mistral-7B-Instruct-v0.3", {"model": "mistralai/Mistral-7B-Instruct-v0.3", "revision": "abc123"}, "abc123")
    assert resolve_model("gpt2", tmp_path).identity == {"model": "gpt2", "revision": "unpinned"}
    assert not (tmp_path / "models").exists()  # nothing converted, nothing fetched


def test_local_folder_is_used_as_is_and_fingerprinted(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    ref = resolve_model(str(folder), tmp_path / "cache")
    assert ref.path_or_name == str(folder.resolve())
    assert ref.revision is None
    assert ref.identity == {"model": str(folder.resolve()), "fingerprint": folder_fingerprint(folder)}
    # a changed file changes the identity, so cached answers of the old weights are not reused
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    assert resolve_model(str(folder), tmp_path / "cache").identity != ref.identity


def test_bad_specs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model folder not found"):
        resolve_model(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(ConfigError, match="model folder not found"):
        resolve_model("./relative/missing", tmp_path)
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_model(str(a_file), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ConfigError, match="Hub models only"):
        resolve_model(PACKAGED_SMOLLM2, tmp_path, revision="main")


def test_packaged_gguf_is_found_without_importing_its_package() -> None:
    path = models.packaged_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_concurrent_conversions_write_once_and_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two converters racing for one folder: one converts, the other waits and reuses; no temp folders stay."""
    calls = []

    def fake_write(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"w")
        time.sleep(0.3)  # the other thread arrives while this one is writing
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_write_checkpoint", fake_write)
    dest = tmp_path / "models" / "m-123"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(convert_gguf(tmp_path / "x.gguf", dest, "123"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [dest, dest]
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors", "valind_conversion.json"]
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_conversion_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write(gguf: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_write_checkpoint", failing_write)
    dest = tmp_path / "models" / "m-123"
    with pytest.raises(RuntimeError, match="disk full"):
        convert_gguf(tmp_path / "x.gguf", dest, "123")
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- the tiny test model (seconds)


def test_tiny_model_is_small_and_loadable(model_cache: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model(model_cache)
    assert path.parent == model_cache / "models" and path.name.startswith("tiny-llama-")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.num_parameters() < 1_000_000
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert tiny_model(model_cache) == path  # reused, not rebuilt


@pytest.mark.slow
def test_tiny_model_is_the_same_wherever_it_is_built(model_cache: Path, tmp_path: Path) -> None:
    again = tiny_model(tmp_path)
    assert again.name == tiny_model(model_cache).name
    assert (again / "model.safetensors").read_bytes() == (tiny_model(model_cache) / "model.safetensors").read_bytes()


# ---------------------------------------------------------------- the real packaged model (slow)


@pytest.mark.slow
def test_packaged_model_converts_to_a_trainable_checkpoint(smollm2: ModelRef, model_cache: Path) -> None:
    folder = Path(smollm2.path_or_name)
    sha = smollm2.identity["gguf_sha256"]
    assert smollm2.identity == {"model": PACKAGED_SMOLLM2, "gguf_sha256": sha}
    assert folder == model_cache / "models" / f"{PACKAGED_SMOLLM2}-{sha[:12]}"
    config = orjson.loads((folder / "config.json").read_bytes())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["dtype"] == "float32"
    assert (folder / "model.safetensors").is_file()
    assert (folder / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_second_resolve_reuses_the_converted_folder(smollm2: ModelRef, model_cache: Path) -> None:
    weights = Path(smollm2.path_or_name) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    again = resolve_model(PACKAGED_SMOLLM2, model_cache)
    assert time.perf_counter() - start < 5  # hashing the GGUF only; a conversion takes ~20 s
    assert again == smollm2
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_converted_model_answers_a_chat_prompt(smollm2: ModelRef) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2.path_or_name)
    model = AutoModelForCausalLM.from_pretrained(smollm2.path_or_name).eval()
    assert tokenizer.model_max_length == 8192
    conv = [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a concise assistant.<|im_end|>")  # the system message is kept
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
