"""Subsets throughput: ``run_subsets`` (Polars / Arrow) against a per-row Python version of the rule.

Input, generated straight into a temporary workspace (no model): 500k pairs = 1M responses in
three ingest sources, 15 values with skewed frequencies (one response in three expresses the
most common value, one in 200 the rarest), about 1% failed extractions, prompts repeated
(300k distinct for 500k pairs), replies of 30-45 words.

- ``run_subsets``: the whole stage: fingerprints, XOR rule, counts, held-out split (5%),
  selection, and writing every subset file (text included), stats, overlap and report.
- ``suggest``: the same reading and rule, counts only, no text and no files.
- naive: ``to_pylist`` + dicts + a loop over pairs with Python sets (the rule and the
  per-value pair lists and counts only: no text, no files, so it does less than either).

The naive result is checked against the files ``run_subsets`` wrote (pair ids and flips of
every value). Target: ``run_subsets`` <= 5 s on 2 cores.

    python bench/subsets.py                  # 500k pairs
    python bench/subsets.py --pairs 100000   # a quicker run
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from valind.config import Config, validate_config
from valind.extract.stage import extractor_id, vocabulary
from valind.schema import PAIR_SCHEMA
from valind.subsets import run_subsets, suggest
from valind.workspace import Workspace, atomic_write_json, hash_file

SOURCES = ("hh-rlhf", "pku-saferlhf", "ultrafeedback")
# chance that one response expresses each of the 15 values (vocabulary order)
FREQUENCIES = (0.33, 0.20, 0.18, 0.15, 0.12, 0.10, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.015, 0.01, 0.005)
FAILURE_RATE = 0.01
WORDS = ("the a value model answer question help because people think good time know make way should could "
         "kind safe honest care data reason friend work feel sure maybe thing example simple clear right").split()


def _hex_ids(rng: np.random.Generator, n: int) -> pl.Series:
    """n distinct 32-hex-character ids in random order (like pair ids and response ids)."""
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    raw[:, 1] = np.arange(n)  # distinct by construction; the random half comes first
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw.tobytes())])
    return pl.from_arrow(fixed.cast(pa.binary())).bin.encode("hex")


def _texts(rng: np.random.Generator, pool: pl.Series, n: int, parts: int, tag: str) -> pl.Series:
    """n distinct texts: ``parts`` sentences of the pool and a numbered tag."""
    picks = [pool.gather(rng.integers(0, len(pool), n)) for _ in range(parts)]
    frame = pl.DataFrame({f"s{i}": p for i, p in enumerate(picks)}).with_row_index("i")
    return frame.select(pl.concat_str([*[pl.col(f"s{i}") for i in range(parts)], pl.lit(tag) + pl.col("i").cast(pl.String)],
                                      separator=" ")).to_series()


def generate(ws: Workspace, config: Config, pairs: int, seed: int = 0) -> None:
    """Write ingest/<source>.parquet, extract/<id>/{values,pairs}.parquet + report, and both stage records."""
    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    pool = pl.Series([" ".join(words.choice(WORDS) for _ in range(15)).capitalize() + "." for _ in range(4000)])
    n_prompts = max(1, pairs * 3 // 5)
    prompt_texts = _texts(rng, pool, n_prompts, 1, "question ")
    prompt_of = rng.integers(0, n_prompts, pairs)
    pair_ids, response_ids = _hex_ids(rng, pairs), _hex_ids(rng, 2 * pairs)
    chosen, rejected = _texts(rng, pool, pairs, 3, "c"), _texts(rng, pool, pairs, 2, "r")

    # ingest: one file per source, pairs in order, one user message per prompt (a system message on every 5th)
    bounds = np.linspace(0, pairs, len(SOURCES) + 1).astype(int)
    inputs = {}
    for k, source in enumerate(SOURCES):
        lo, hi = bounds[k], bounds[k + 1]
        n = hi - lo
        has_system = (np.arange(lo, hi) % 5) == 0
        counts = 1 + has_system.astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        roles = np.full(offsets[-1], "user", dtype=object)
        contents = np.empty(offsets[-1], dtype=object)
        user_at = offsets[1:] - 1
        contents[user_at] = prompt_texts.gather(prompt_of[lo:hi]).to_numpy()
        system_at = offsets[:-1][has_system]
        roles[system_at] = "system"
        contents[system_at] = "You are a helpful assistant."
        messages = pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())], names=["role", "content"])
        table = pa.Table.from_arrays([
            pair_ids.slice(lo, n).to_arrow().cast(pa.string()), pa.array([source] * n, pa.string()),
            pa.ListArray.from_arrays(pa.array(offsets), messages, type=PAIR_SCHEMA.field("prompt").type),
            chosen.slice(lo, n).to_arrow().cast(pa.string()), rejected.slice(lo, n).to_arrow().cast(pa.string()),
            pa.array(["{}"] * n, pa.string()),
        ], schema=PAIR_SCHEMA)
        path = ws.ingest_file(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd", compression_level=1)
        inputs[str(path.relative_to(ws.root))] = hash_file(path)
    ws.record_stage("ingest", "bench", [ws.ingest_file(s) for s in SOURCES], {})

    # extract: random value sets, a few failures
    names = vocabulary(config.extract).names
    has = rng.random((2 * pairs, len(names))) < np.array(FREQUENCIES[: len(names)])
    failed = rng.random(2 * pairs) < FAILURE_RATE
    status = np.where(failed, np.where(rng.random(2 * pairs) < 0.5, "error", "parse_error"), "ok")
    flags = pl.DataFrame({name: has[:, i] & ~failed for i, name in enumerate(names)})
    values = flags.select(values=pl.concat_list([pl.when(pl.col(n)).then(pl.lit(n)) for n in names]).list.drop_nulls())
    ext_id = extractor_id(config.extract)
    out = ws.extract_dir(ext_id)
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"response_id": response_ids, "values": values.to_series(), "status": status}).write_parquet(out / "values.parquet")
    pl.DataFrame({"pair_id": pair_ids, "source": np.repeat(SOURCES, np.diff(bounds)),
                  "chosen_id": response_ids.gather(np.arange(0, 2 * pairs, 2)),
                  "rejected_id": response_ids.gather(np.arange(1, 2 * pairs, 2))}).write_parquet(out / "pairs.parquet")
    atomic_write_json(out / "extract_report.json", {"extractor_id": ext_id, "inputs": inputs})
    ws.record_stage(f"extract/{ext_id}", "bench", [out / "values.parquet", out / "pairs.parquet", out / "extract_report.json"], {})


def naive(ws: Workspace, config: Config) -> tuple[dict[str, list[tuple[str, bool]]], int]:
    """The rule with Python objects: value -> sorted (pair_id, flipped), and the failed pair count."""
    folder = ws.extract_dir(extractor_id(config.extract))
    cols = pq.read_table(folder / "values.parquet", columns=["response_id", "values", "status"]).to_pydict()
    values = {rid: (vals, status) for rid, vals, status in zip(cols["response_id"], cols["values"], cols["status"])}
    members: dict[str, list[tuple[str, bool]]] = {name: [] for name in vocabulary(config.extract).names}
    failed = 0
    for pair in pq.read_table(folder / "pairs.parquet").to_pylist():
        c, r = values.get(pair["chosen_id"]), values.get(pair["rejected_id"])
        if c is None or r is None or c[1] != "ok" or r[1] != "ok":
            failed += 1
            continue
        plus, minus = set(c[0]), set(r[0])
        for v in plus - minus:
            members[v].append((pair["pair_id"], False))
        for v in minus - plus:
            members[v].append((pair["pair_id"], True))
    for rows in members.values():
        rows.sort()
    return members, failed


def written(ws: Workspace, value: str) -> list[tuple[str, bool]]:
    files = [f for f in (ws.subset_file(value), ws.heldout_file(value)) if f.is_file()]
    table = pa.concat_tables([pq.read_table(f, columns=["pair_id", "flipped"]) for f in files])
    return sorted(zip(table["pair_id"].to_pylist(), table["flipped"].to_pylist()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500_000, help="generated pairs (default 500k = 1M responses)")
    ap.add_argument("--repeats", type=int, default=2, help="take the best of this many runs of each")
    args = ap.parse_args()
    print(f"# bench/subsets.py  {time.strftime('%Y-%m-%d')}  {platform.machine()} python {platform.python_version()} "
          f"polars {pl.__version__} pyarrow {pa.__version__}")
    print(f"# reproduce: python bench/subsets.py --pairs {args.pairs} --repeats {args.repeats}")
    config = validate_config({"subsets": {"min_pairs": 1, "heldout_fraction": 0.05}})
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        generate(ws, config, args.pairs)
        print(f"# generated {args.pairs:,} pairs / {2 * args.pairs:,} responses in {time.perf_counter() - start:.1f} s")

        full, counts, slow = [], [], []
        for _ in range(args.repeats):
            ws.clear_stage("subsets")
            start = time.perf_counter()
            result = run_subsets(config, ws)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            suggest(config, ws)
            counts.append(time.perf_counter() - start)
            start = time.perf_counter()
            expected, failed = naive(ws, config)
            slow.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert run_subsets(config, ws).skipped
        skip = time.perf_counter() - start

        assert failed == result.report["excluded_failed_extraction"], (failed, result.report["excluded_failed_extraction"])
        for value in result.selected:
            assert written(ws, value) == expected[value], f"{value}: naive and run_subsets differ"
        rows = sum(c.total for c in result.stats)
        size = sum(p.stat().st_size for p in ws.subsets_dir.glob("*.parquet"))
        best_full, best_counts, best_naive = min(full), min(counts), min(slow)
        print(f"subset rows written {rows:,} in {len(result.selected)} values ({size / 2**20:,.0f} MiB Parquet); "
              f"pairs excluded for failed extraction {failed:,}; results equal to the naive version")
        print(f"run_subsets (all files)   {best_full:6.2f} s")
        print(f"suggest (counts only)     {best_counts:6.2f} s")
        print(f"naive Python (rule only)  {best_naive:6.2f} s   naive / suggest {best_naive / best_counts:4.1f}x, "
              f"naive / run_subsets {best_naive / best_full:4.1f}x")
        print(f"re-run, skipped           {skip:6.2f} s   (fingerprints of the inputs)")
        print(f"# target: run_subsets <= 5 s on 2 cores: {'met' if best_full <= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
