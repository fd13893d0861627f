"""How long the README's first command (`valind demo`) takes, stage by stage, against the 15-minute target.

Runs `valind demo` in a fresh workspace with a fresh model-call cache (cold: the packaged SmolLM2 is
converted, the sentence encoder exported, every model call made), then once more on the same workspace
(everything up to date). A reference workload measured in the same run, before and after (a forward +
backward pass of SmolLM2-135M on 4 x 128 tokens, median of 5), turns the demo time into a ratio that
is comparable across noisy machines.

    python bench/demo.py                 # cold cache (what a fresh clone sees)
    python bench/demo.py --warm-cache C  # reuse cache folder C (model conversion and calls already done)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 15 * 60


def reference_seconds(cache: Path, repeats: int = 5) -> float:
    """Median seconds of one forward + backward pass of SmolLM2-135M on 4 x 128 tokens (CPU)."""
    os.environ["VALIND_CACHE"] = str(cache)
    import torch

    from valind.models import load_causal_lm, resolve_model

    model = load_causal_lm(resolve_model("smollm2-135m-instruct", cache)).model
    model.train()
    ids = torch.randint(0, 1000, (4, 128))
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first pass warms up allocators


def run_demo(workspace: Path, cache: Path) -> tuple[float, dict[str, float], str]:
    env = {**os.environ, "VALIND_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "valind", "demo", "-w", str(workspace)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"valind demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    state = json.loads((workspace / ".valind" / "run.json").read_text())
    from valind.pipeline import STAGES

    stages = {s.value: state["stages"][s.value].get("seconds", float("nan")) for s in STAGES if s.value in state["stages"]}
    last = [line for line in proc.stdout.splitlines() if line.startswith("report:")]
    return seconds, stages, last[-1] if last else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm-cache", type=Path, help="reuse this cache folder instead of a fresh one")
    parser.add_argument("--keep", type=Path, help="write the workspace here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="valind-bench-demo-") as tmp:
        cache = args.warm_cache or Path(tmp) / "cache"
        workspace = args.keep or Path(tmp) / "demo"
        ref_before = reference_seconds(Path(tmp) / "ref-cache")
        cold, stages, report_line = run_demo(workspace, cache)
        rerun, _, _ = run_demo(workspace, cache)
        ref_after = reference_seconds(Path(tmp) / "ref-cache")

    ref = statistics.mean([ref_before, ref_after])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"command: python bench/demo.py{' --warm-cache ' + str(args.warm_cache) if args.warm_cache else ''}")
    print(f"cache: {'warm (' + str(args.warm_cache) + ')' if args.warm_cache else 'cold (fresh folder)'}")
    print(f"{'stage':10} {'seconds':>8}")
    for name, seconds in stages.items():
        print(f"{name:10} {seconds:8.1f}")
    print(f"{'total':10} {cold:8.1f}   (target {TARGET_S} s: {'met' if cold <= TARGET_S else 'MISSED'}, {cold / TARGET_S:.0%} of it)")
    print(f"re-run (everything up to date): {rerun:.1f} s")
    print(f"reference (SmolLM2 forward+backward, 4x128 tokens): {ref_before:.2f} s before, {ref_after:.2f} s after")
    print(f"demo / reference: {cold / ref:,.0f}x")
    print(report_line)


if __name__ == "__main__":
    main()
