"""Generation throughput of the hf backend: batched against one prompt at a time, in one run.

- CPU: the packaged SmolLM2-135M-Instruct, greedy, on the first prompts of the value_elicitation
  suite (one per value, round robin), batched (``--batch-size``) and then one at a time;
  new tokens/s of each and the ratio. The answers of the two runs must be identical (greedy,
  left padding), which the script checks.
- GPU (only when CUDA is available, else a printed skip line): an 8B-shaped Llama (Llama-3-8B
  layer sizes, random bfloat16 weights built on the GPU, SmolLM2's tokenizer and vocabulary), the
  same comparison with ``--gpu-prompts`` prompts. Random weights never emit EOS, so every answer runs
  to max_new_tokens: a pure decoding-throughput figure.

    python bench/generate.py                                   # CPU part (+ GPU part on a GPU machine)
    python bench/generate.py --prompts 16 --max-new-tokens 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from valind.generate.base import Completion, Decoding
from valind.generate.config import GenerateConfig
from valind.generate.hf import ChatBatcher
from valind.generate.suites import load_suite
from valind.models import PACKAGED_SMOLLM2, load_causal_lm, resolve_model

LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0}


def prompts(n: int) -> list[list[dict[str, str]]]:
    """n value_elicitation prompts, round robin over the values (so lengths vary as in a real run)."""
    suite = load_suite("value_elicitation", GenerateConfig())
    by_value: dict[str, list[list[dict[str, str]]]] = {}
    for p in suite:
        by_value.setdefault(str(p.fields["target_value"]), []).append(p.messages)
    rounds = [conv for group in zip(*by_value.values()) for conv in group]
    return (rounds * (n // len(rounds) + 1))[:n]


def timed(batcher: ChatBatcher, convs: list[list[dict[str, str]]], decoding: Decoding, batch_size: int) -> tuple[float, int, list[str]]:
    batcher.batch_size = batch_size
    start = time.perf_counter()
    out = batcher.generate(convs, decoding)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    answers = [a for a in out if isinstance(a, Completion)]
    if len(answers) != len(out):
        raise SystemExit(f"{len(out) - len(answers)} generations failed: {[a for a in out if not isinstance(a, Completion)][:2]}")
    return seconds, sum(a.tokens or 0 for a in answers), [a.text for a in answers]


def compare(label: str, batcher: ChatBatcher, convs: list[list[dict[str, str]]], decoding: Decoding, batch_size: int) -> None:
    timed(batcher, convs[:2], Decoding(max_new_tokens=4), 2)  # warm-up: kernels, allocator
    batched_s, batched_tokens, batched_texts = timed(batcher, convs, decoding, batch_size)
    single_s, single_tokens, single_texts = timed(batcher, convs, decoding, 1)
    same = sum(a == b for a, b in zip(batched_texts, single_texts))
    print(f"{label}: {len(convs)} prompts, max_new_tokens {decoding.max_new_tokens}, greedy")
    print(f"  batched (batch {batch_size}): {batched_s:7.1f} s, {batched_tokens:6,} new tokens, {batched_tokens / batched_s:8.1f} tokens/s")
    print(f"  one at a time:      {single_s:7.1f} s, {single_tokens:6,} new tokens, {single_tokens / single_s:8.1f} tokens/s")
    print(f"  ratio (tokens/s batched / one at a time): {(batched_tokens / batched_s) / (single_tokens / single_s):.2f}x; "
          f"identical answers {same}/{len(convs)}")


def bench_cpu(args: argparse.Namespace, cache_dir: Path) -> None:
    start = time.perf_counter()
    ref = resolve_model(PACKAGED_SMOLLM2, cache_dir)
    loaded = load_causal_lm(ref)
    print(f"SmolLM2-135M-Instruct resolved and loaded in {time.perf_counter() - start:.1f} s ({loaded.device}, {loaded.dtype})")
    batcher = ChatBatcher(loaded.model, loaded.tokenizer, loaded.device, args.batch_size)
    compare("SmolLM2-135M-Instruct", batcher, prompts(args.prompts), Decoding(max_new_tokens=args.max_new_tokens), args.batch_size)


def bench_gpu(args: argparse.Namespace, cache_dir: Path) -> None:
    if not torch.cuda.is_available():
        print("GPU part skipped: no CUDA GPU visible (8B-shaped model, batched vs one at a time)")
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(PACKAGED_SMOLLM2, cache_dir).path_or_name)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **LLAMA3_8B)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"8B-shaped Llama ({params / 1e9:.2f}B parameters, bfloat16, {torch.cuda.get_device_name()}) built in "
          f"{time.perf_counter() - start:.1f} s")
    batcher = ChatBatcher(model, tokenizer, torch.device("cuda"), args.gpu_batch_size)
    compare("8B-shaped Llama", batcher, prompts(args.gpu_prompts), Decoding(max_new_tokens=args.max_new_tokens), args.gpu_batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="CPU: prompts to answer")
    parser.add_argument("--batch-size", type=int, default=16, help="CPU: prompts per batch in the batched run")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--gpu-prompts", type=int, default=64, help="GPU: prompts to answer")
    parser.add_argument("--gpu-batch-size", type=int, default=32, help="GPU: prompts per batch in the batched run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: a temporary folder; the GGUF is converted once)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="valind-bench-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        bench_cpu(args, cache_dir)
        bench_gpu(args, cache_dir)


if __name__ == "__main__":
    main()
