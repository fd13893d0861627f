"""Seconds per TRL DPO step against a bare forward + backward on the same tokens, in one run.

Model: the packaged SmolLM2-135M-Instruct, full fine-tuning, float32, batch 2 pairs, max length 128.
Every sequence is cut at exactly 128 tokens (long responses), so every batch is 4 x 128 tokens and
all variants see the same shapes. Measured in this one process, one after another:

- bare: ``model(input_ids).logits`` -> log-softmax -> completion log-probs summed -> ``backward``
  on one batch as TRL's collator builds it; "bare + ref" adds a no-grad forward (the reference).
- TRL variants (``trl.DPOTrainer.train`` for warm-up + measured steps; a step is timed from
  ``on_step_begin`` to ``on_step_end``, so it includes the optimiser step, AdamW, as TRL runs it;
  right after each step the bare forward + backward runs on a fixed batch of the same shape, so each
  ratio is a median of paired samples taken under the same load):
  ``defaults`` (``DPOConfig(use_cpu=True, ...)`` as it comes: bf16 autocast, gradient
  checkpointing, reference forward each step with a second model copy), then (``--all``) one
  change at a time, then valind's settings (bf16 off, gradient checkpointing off, reference
  log-probs precomputed).

Prints the median of each, the ratio of valind's step to bare (target <= 1.5), and the command.
Machines are noisy: compare ratios within one run. ``--profile`` adds torch.profiler's top ops
for one step of the defaults and one of valind's settings.

    python bench/dpo_step.py [--steps 6] [--warmup 2] [--all] [--profile] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import DPOConfig, DPOTrainer

from valind.models import PACKAGED_SMOLLM2, resolve_model

BATCH = 2  # pairs per step
MAX_LENGTH = 128
DEMO = Path(__file__).resolve().parents[1] / "src" / "valind" / "data" / "demo" / "pairs.jsonl"


def pairs(n: int) -> Dataset:
    """n conversational pairs whose prompt + response exceed MAX_LENGTH tokens (so all are cut to 128)."""
    import orjson

    demo = [orjson.loads(line) for line in DEMO.read_bytes().splitlines() if line.strip()]
    rows = []
    for i in range(n):
        p = demo[i % len(demo)]
        rows.append({
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": " ".join([p["chosen"]] * 4)}],
            "rejected": [{"role": "assistant", "content": " ".join([p["rejected"]] * 4)}],
        })
    return Dataset.from_list(rows)


class PairedTimer(TrainerCallback):
    """Times each TRL step (on_step_begin -> on_step_end: forward, backward, optimiser) and, right after it,
    a bare forward + backward and a bare forward + backward + reference forward on the fixed batch: paired
    samples taken under the same machine load, so their ratios hold on a noisy shared machine."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        self.step: list[float] = []
        self.bare: list[float] = []
        self.bare_ref: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.step.append(time.perf_counter() - self._t0)
        self.bare.append(bare(model, self.batch, with_ref=False))
        self.bare_ref.append(bare(model, self.batch, with_ref=True))


def trainer(path: str, tokenizer: Any, data: Dataset, steps: int, out: Path, **overrides: Any) -> DPOTrainer:
    args = DPOConfig(
        output_dir=str(out), use_cpu=True, per_device_train_batch_size=BATCH, max_length=MAX_LENGTH, max_steps=steps,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, **overrides,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    t.remove_callback(PrinterCallback)
    return t


def bare(model: torch.nn.Module, batch: dict[str, torch.Tensor], with_ref: bool) -> float:
    """One forward + backward (+ a no-grad reference forward) of the policy on the batch, in seconds; the
    gradients are dropped (called between TRL steps, after its optimiser step and zero_grad)."""
    t0 = time.perf_counter()
    labels = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:]
    if with_ref:
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (logps * mask).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


VARIANTS: dict[str, dict[str, Any]] = {
    "TRL defaults (bf16, grad ckpt, ref each step)": {},
    "defaults, bf16 off": {"bf16": False},
    "defaults, grad ckpt off": {"gradient_checkpointing": False},
    "defaults, bf16 + grad ckpt off": {"bf16": False, "gradient_checkpointing": False},
    "valind (bf16 off, grad ckpt off, ref precomputed)": {"bf16": False, "gradient_checkpointing": False, "precompute_ref_log_probs": True},
    "valind + bf16: true (CPUs with native bf16)": {"bf16": True, "gradient_checkpointing": False, "precompute_ref_log_probs": True},
}
BEFORE = "TRL defaults (bf16, grad ckpt, ref each step)"
OURS = "valind (bf16 off, grad ckpt off, ref precomputed)"


class ProfileOneStep(TrainerCallback):
    """torch.profiler over one whole training step (forward, backward, optimiser), the first measured one."""

    def __init__(self, step: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.step = step
        self.prof = profile(activities=[ProfilerActivity.CPU])

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            self.prof.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step + 1:
            self.prof.stop()

    def table(self) -> str:
        return self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="Measured TRL steps per variant.")
    parser.add_argument("--warmup", type=int, default=2, help="TRL steps run first and not counted.")
    parser.add_argument("--bare-repeats", type=int, default=5, help="Bare forward + backward repetitions (after one warm-up).")
    parser.add_argument("--all", action="store_true", help="Also run the one-change-at-a-time variants between the defaults and valind's settings.")
    parser.add_argument("--profile", action="store_true", help="Print torch.profiler's top ops for one step of the defaults and of valind's settings.")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("VALIND_CACHE", Path.home() / ".cache" / "valind")))
    parser.add_argument("--out", type=Path, default=Path("/tmp/valind-bench-dpo"))
    args = parser.parse_args()

    path = resolve_model(PACKAGED_SMOLLM2, args.cache_dir).path_or_name
    tokenizer = AutoTokenizer.from_pretrained(path)
    total = args.warmup + args.steps
    data = pairs(BATCH * total)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"SmolLM2-135M full fine-tuning fp32, batch {BATCH} pairs, max length {MAX_LENGTH}, "
          f"{args.steps} measured steps after {args.warmup} warm-up")

    rows = []
    variants = VARIANTS if args.all else {k: v for k, v in VARIANTS.items() if k in (BEFORE, OURS)}
    # bare runs the trainer's own model object: under bf16, Accelerate has wrapped its forward in autocast,
    # so each variant's bare figure uses that variant's precision.
    for label, overrides in variants.items():
        started = time.perf_counter()
        t = trainer(path, tokenizer, data, total, args.out, **overrides)
        setup = time.perf_counter() - started  # includes TRL's reference pass over all pairs when precomputing
        batch = next(iter(t.get_train_dataloader()))
        assert batch["input_ids"].shape == (2 * BATCH, MAX_LENGTH), batch["input_ids"].shape
        timer = PairedTimer({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        t.add_callback(timer)
        profiler = ProfileOneStep(args.warmup) if args.profile and label in (BEFORE, OURS) else None
        if profiler:
            t.add_callback(profiler)
        t.train()
        if profiler:
            print(f"\n--- torch.profiler, one whole step (the first measured one; it runs slower under the profiler): {label}")
            print(profiler.table())
        keep = slice(args.warmup, None)
        step, bare_fb, bare_ref = (statistics.median(x[keep]) for x in (timer.step, timer.bare, timer.bare_ref))
        ratio_fb = statistics.median(s / b for s, b in zip(timer.step[keep], timer.bare[keep], strict=True))
        ratio_ref = statistics.median(s / b for s, b in zip(timer.step[keep], timer.bare_ref[keep], strict=True))
        rows.append((label, step, bare_fb, bare_ref, ratio_fb, ratio_ref, setup))
        print(f"{label:52s} step {step:5.2f} s | bare fwd+bwd {bare_fb:5.2f} s, +ref {bare_ref:5.2f} s | "
              f"step/bare {ratio_fb:4.2f}x, step/(bare+ref) {ratio_ref:4.2f}x | set-up {setup:5.1f} s   "
              f"(steps: {', '.join(f'{x:.2f}' for x in timer.step)})", flush=True)
        del t
        gc.collect()

    by_label = {r[0]: r for r in rows}
    before, ours = by_label[BEFORE], by_label[OURS]
    print("\n| settings | s/step | bare fwd+bwd | bare fwd+bwd+ref | step / bare | step / (bare+ref) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, step, bare_fb, bare_ref, ratio_fb, ratio_ref, _ in rows:
        print(f"| {label} | {step:.2f} | {bare_fb:.2f} | {bare_ref:.2f} | {ratio_fb:.2f}x | {ratio_ref:.2f}x |")
    print(f"\nbefore (TRL defaults): {before[1]:.2f} s/step, {before[5]:.2f}x bare fwd+bwd+ref (its step runs the reference)")
    print(f"after (valind):        {ours[1]:.2f} s/step, {ours[4]:.2f}x bare fwd+bwd (the reference is precomputed)   [target <= 1.5]")
    print(f"speed-up: {before[1] / ours[1]:.2f}x; valind's set-up incl. the reference pass over {len(data)} pairs: {ours[6]:.1f} s")
    print(f"\nreproduce: {sys.executable} bench/dpo_step.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
