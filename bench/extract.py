"""Extraction throughput: the embedded extractor cold and warm, and the hf backend.

- embedded, cold call cache: responses/s over every chosen and rejected response of the real
  HH-RLHF harmless-base-test file (target >= 100/s on 2 cores). The classifier is fitted (or
  loaded) first and timed separately: it is a one-off per vocabulary and label set.
- the same run again with the warm cache (target <= 5% of the cold time).
- hf backend (packaged SmolLM2-135M-Instruct on CPU): responses/s on a small sample, batched
  against one at a time (the ratio is the figure to compare).

    python bench/extract.py                  # all of it
    python bench/extract.py --hf-sample 0    # skip the hf part
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from valind.cache import Cache
from valind.config import validate_config
from valind.extract import Item, make_extractor
from valind.extract.runner import run_extraction
from valind.values import load_vocabulary

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def hh_items() -> list[Item]:
    from valind.ingest import run_ingest
    from valind.workspace import Workspace
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        cfg = validate_config({"ingest": {"sources": [{"path": str(SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"), "name": "hh"}]}})
        ws = Workspace(tmp)
        run_ingest(cfg, ws)
        cols = pq.read_table(ws.ingest_file("hh")).to_pydict()
    return [Item(p, r) for p, c, j in zip(cols["prompt"], cols["chosen"], cols["rejected"]) for r in (c, j)]


def bench_embedded(items: list[Item], cache_dir: Path) -> None:
    cfg = validate_config({"cache_dir": str(cache_dir)})
    start = time.perf_counter()
    extractor = make_extractor(cfg.extract, load_vocabulary(), cache_dir)
    fit_s = time.perf_counter() - start
    with Cache(cache_dir / "calls.sqlite") as cache:
        start = time.perf_counter()
        _, _, cold_stats = run_extraction(extractor, items, cache, batch_size=256)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        _, _, warm_stats = run_extraction(extractor, items, cache, batch_size=256)
        warm = time.perf_counter() - start
    unique = cold_stats.unique
    print(f"embedded: fit/load classifier {fit_s:.1f} s (one-off)")
    print(f"embedded cold: {len(items):,} responses ({unique:,} unique) in {cold:.1f} s = {unique / cold:,.0f} unique responses/s "
          f"(target >= 100/s)")
    print(f"embedded warm: {warm:.2f} s = {warm / cold:.1%} of cold (target <= 5%), model calls {warm_stats.computed}")


def bench_hf(items: list[Item], cache_dir: Path, n: int) -> None:
    sample = items[:n]
    cfg = validate_config({"cache_dir": str(cache_dir), "extract": {"extractor": "hf", "max_retries": 0}})
    extractor = make_extractor(cfg.extract, load_vocabulary(), cache_dir)
    convs = [extractor_conv(extractor, it) for it in sample]
    start = time.perf_counter()
    extractor.generate(convs)  # batched (batch_size from config)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for conv in convs:
        extractor.generate([conv])
    single = time.perf_counter() - start
    print(f"hf (SmolLM2-135M, CPU, greedy, batch {cfg.extract.batch_size}): {n} responses batched {batched:.1f} s "
          f"({n / batched:.2f}/s), one at a time {single:.1f} s ({n / single:.2f}/s), speed-up {single / batched:.2f}x")


def extractor_conv(extractor, item: Item):  # type: ignore[no-untyped-def]
    from valind.extract.prompting import render

    return render(extractor.vocab, extractor.mode, item.prompt if extractor.uses_prompt else [], item.response)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf-sample", type=int, default=16, help="responses for the hf part (0 skips it)")
    args = ap.parse_args()
    print(f"# bench/extract.py  {time.strftime('%Y-%m-%d')}  {platform.machine()}  python {platform.python_version()}")
    print(f"# reproduce: python bench/extract.py --hf-sample {args.hf_sample}")
    if not (SHARED / "hh-rlhf").is_dir():
        print(f"# skipped: {SHARED / 'hh-rlhf'} not found")
        return 0
    items = hh_items()
    with tempfile.TemporaryDirectory() as tmp:
        bench_embedded(items, Path(tmp))
        if args.hf_sample:
            bench_hf(items, Path(tmp), args.hf_sample)
    return 0


if __name__ == "__main__":
    sys.exit(main())
