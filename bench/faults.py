"""The fault suite as one table: crashes, damaged state, server faults, hostile and malformed inputs, secrets.

Every scenario is the one the tests run (tests/test_crash_resume.py, test_corrupt.py,
test_server_faults.py, test_hostile.py, test_fuzz.py, test_secrets.py), here counted instead of
asserted. Targets: items lost 0, cached model calls repeated 0, crashes on bad input 0, leaks 0.

- crash: a stage killed with SIGKILL at a fault point (valind.faults), then resumed; quick: the fast
  stages with fake backends, one kill per stage; --full adds ``valind run`` killed once in every
  stage in a row (train and report included) on a tiny model.
- corrupt: a damaged output, record, cache entry or page, manifest or adapter; how each ended.
- server: every fault of tests/servers.py, once and for good, through both OpenAI-compatible clients.
- hostile: injection texts through the extractor and judge prompts and a gullible fake model.
- fuzz: mutated input files (JSONL, JSON, CSV, Parquet, gzip), model answers and input lines.
- secrets: a sentinel API key through a configured run and a 401 that echoes it; files and output scanned.

    python bench/faults.py            # quick, about 2 minutes on 2 cores
    python bench/faults.py --full     # + the whole `valind run` chain killed in every stage
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scenarios are the tests' own

from valind.errors import ValindError  # noqa: E402


@dataclass
class Row:
    """One line of the table."""

    area: str
    scenario: str
    faults: int = 0  # faults injected (kills, damaged files, bad answers, bad inputs)
    resumed: int = 0  # runs resumed after a kill or an interrupt
    items: int = 0  # items that had to end as a result or a counted failure
    lost: int = 0  # items that did neither (target 0)
    repeated: int = 0  # cached model calls made again (target 0)
    ended: Counter[str] = field(default_factory=Counter)  # how each fault or bad input ended

    def cells(self) -> list[str]:
        ended = ", ".join(f"{k} {v}" for k, v in self.ended.most_common())
        return [self.area, self.scenario, str(self.faults), str(self.resumed), str(self.items), str(self.lost),
                str(self.repeated), ended]


# ---------------------------------------------------------------- crash and resume


def crash(full: bool, tmp: Path) -> Iterator[Row]:
    from test_crash_resume import (
        DRIVER, FULL_KILLS, QUICK_KILLS, QUICK_STAGES, Scenario, lost_items, outputs, quick_config, run_chain,
    )
    from valind.models import tiny_model

    tiny = str(tiny_model(tmp / "models"))

    def driver(root: Path) -> Scenario:
        root.mkdir(parents=True)
        return Scenario(root, [sys.executable, "-c", DRIVER, str(quick_config(root, tiny)), str(root / "ws"), *QUICK_STAGES])

    reference = driver(tmp / "reference")
    reference.run()
    want = outputs(reference.ws)
    for stage, target in QUICK_KILLS.items():
        scenario = driver(tmp / f"kill-{stage}")
        scenario.run(kill_at=target)
        scenario.run()
        got = outputs(scenario.ws)
        units = sum(len(v) for k, v in got.items() if k.startswith(("extract/", "generate/")) and isinstance(v, list))
        yield Row("crash", f"{stage}: SIGKILL at {target}", faults=1, resumed=1, items=units, lost=lost_items(scenario.ws),
                  repeated=scenario.repeated, ended=Counter({"same outputs" if got == want else "OUTPUTS DIFFER": 1}))
    if full:
        (tmp / "chain-config").mkdir()
        config = quick_config(tmp / "chain-config", tiny, cache_dir=False)
        start = time.perf_counter()
        ref, chain = run_chain(tmp / "chain", config, [])
        same = outputs(chain.ws) == outputs(ref.ws)
        units = sum(len(v) for k, v in outputs(chain.ws).items() if k.startswith(("extract/", "generate/")) and isinstance(v, list))
        yield Row("crash", f"`valind run` killed in all {len(FULL_KILLS)} stages in a row ({time.perf_counter() - start:.0f} s)",
                  faults=len(chain.kills), resumed=len(chain.kills), items=units, lost=lost_items(chain.ws),
                  repeated=chain.repeated, ended=Counter({"same outputs" if same else "OUTPUTS DIFFER": 1}))


# ---------------------------------------------------------------- damaged state


def corrupt(tmp: Path) -> Iterator[Row]:
    from test_corrupt import PAIRS, _damage_pages, _finished_cell, config, flip_byte
    from conftest import write_jsonl
    from valind.cache import Cache
    from valind.extract.stage import extractor_id, run_extract
    from valind.ingest import run_ingest
    from valind.subsets import run_subsets
    from valind.train.plan import cell_state
    from valind.workspace import Workspace

    def fresh(name: str) -> tuple[Any, Workspace]:
        root = tmp / name
        root.mkdir()
        write_jsonl(root / "pairs.jsonl", PAIRS)
        cfg, ws = config(root), Workspace(root / "ws")
        run_ingest(cfg, ws)
        run_extract(cfg, ws)
        run_subsets(cfg, ws)
        return cfg, ws

    def outcome(fn: Callable[[], str]) -> str:
        try:
            return fn()
        except ValindError as err:
            return f"refused ({type(err).__name__})"

    ended: Counter[str] = Counter()
    cfg, ws = fresh("truncated")
    path = ws.ingest_file("p")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    ws.clear_stage(f"extract/{extractor_id(cfg.extract)}")
    ended["truncated ingest output, next stage: " + outcome(lambda: run_extract(cfg, ws) and "READ IT (WRONG)")] += 1
    ended["truncated ingest output, its stage: " + ("recomputed identically" if not run_ingest(cfg, ws).skipped and path.read_bytes() == good else "WRONG")] += 1
    cfg, ws = fresh("flipped")
    subset = sorted(ws.subsets_dir.glob("*.parquet"))[0]
    good = subset.read_bytes()
    flip_byte(subset)
    ended["changed subset file: " + ("recomputed identically" if not run_subsets(cfg, ws).skipped and subset.read_bytes() == good else "WRONG")] += 1
    ws.stage_record_path("subsets").write_bytes(b'{"stage": ')
    ended["unreadable stage record: " + ("stage ran again" if not run_subsets(cfg, ws).skipped else "WRONG")] += 1
    manifest = orjson.loads(ws.manifest.read_bytes())
    manifest["config"]["extract"]["extractor"] = "embedded"
    ws.manifest.write_bytes(orjson.dumps(manifest))
    ended["hand-edited manifest: " + outcome(lambda: ws.read_manifest() and "TRUSTED (WRONG)")] += 1
    cache_path = tmp / "value.sqlite"
    with Cache(cache_path) as cache:
        cache.put("ns", "k", {"v": "MARKER"})
    data = cache_path.read_bytes()
    flip_byte(cache_path, at=data.index(b"MARKER"))
    with Cache(cache_path) as cache:
        ended["changed cache value: " + ("miss, recomputed" if cache.get_many("ns", ["k"]) == {} and cache.damaged == 1 else "WRONG")] += 1
    page_path = tmp / "pages.sqlite"
    with Cache(page_path) as cache:
        cache.put_many("ns", {f"k{i}": "x" * 300 for i in range(400)})
    _damage_pages(page_path)
    ended["damaged cache page: " + outcome(lambda: Cache(page_path) and "OPENED (WRONG)")] += 1
    for damage in ("deleted", "changed"):
        paths = _finished_cell(tmp / f"cell-{damage}")
        weights = paths.adapter / "adapter_model.safetensors"
        weights.unlink() if damage == "deleted" else flip_byte(weights)
        ended[f"{damage} adapter file: cell {cell_state(paths, 'K').value}, trained again"] += 1
    yield Row("corrupt", "damaged outputs, records, cache, manifest, adapters", faults=sum(ended.values()), ended=ended)


# ---------------------------------------------------------------- server faults


def server() -> Iterator[Row]:
    from servers import Fault, FaultServer
    from test_server_faults import REPAIRS, RETRIES, extractor, generator, items, requests
    from valind.extract.llm import CallFailed

    n = 4
    for client in ("extractor", "generator"):
        ended: Counter[str] = Counter()
        lost = sent = bound = 0
        for fault in Fault:
            for lasting in (False, True):
                with FaultServer(then=fault, hang_s=2) if lasting else FaultServer([fault], hang_s=2) as srv:
                    if client == "extractor":
                        out = extractor(srv.base_url).extract(items(n))
                        kinds = [r.status.value if r.ok else (r.error or r.status.value).split(":")[0] for r in out]
                        bound += n * (1 + RETRIES) * (1 + REPAIRS)
                    else:
                        res = generator(srv.base_url).generate(requests(n))
                        kinds = ["ok" if not isinstance(a, CallFailed) else str(a).split(":")[0] for a in res]
                        bound += n * (1 + RETRIES)
                    sent += srv.requests
                lost += n - len(kinds)
                ended.update(kinds)
        yield Row("server", f"{client}: {len(Fault)} faults x once/lasting, {sent} requests (bound {bound})",
                  faults=2 * len(Fault), items=2 * len(Fault) * n, lost=lost, ended=ended)
    yield from interrupt()


def interrupt() -> Iterator[Row]:
    import signal
    import threading

    from servers import FaultServer
    from conftest import write_jsonl
    from valind.cache import Cache
    from valind.config import validate_config
    from valind.extract.stage import run_extract
    from valind.ingest import run_ingest
    from valind.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp_dir, FaultServer(delay_s=0.01) as srv:
        tmp = Path(tmp_dir)
        write_jsonl(tmp / "pairs.jsonl", [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(30)])
        cfg = validate_config({"cache_dir": str(tmp / "cache"), "ingest": {"sources": [{"path": str(tmp / "pairs.jsonl"), "adapter": "generic"}]},
                               "extract": {"extractor": "openai", "base_url": srv.base_url, "model": "m", "batch_size": 8,
                                           "concurrency": 2, "json_schema": False}})
        ws = Workspace(tmp / "ws")
        run_ingest(cfg, ws)
        main = threading.main_thread().ident
        srv.on_served = lambda count: signal.pthread_kill(main, signal.SIGINT) if count == 20 else None
        with contextlib.suppress(KeyboardInterrupt):
            run_extract(cfg, ws)
        with Cache(tmp / "cache" / "calls.sqlite") as cache:
            cached = cache.count("extract")
        srv.on_served = None
        before = len(srv.received)
        report = run_extract(cfg, ws).report
        second = len(srv.received) - before
    yield Row("server", "Ctrl-C in the extract stage after 20 answers, then resumed", faults=1, resumed=1, items=60,
              lost=60 - report["unique_responses"] + sum(report["failed"].values()),
              repeated=max(0, second - (60 - cached)), ended=Counter({f"{cached} reused, {second} asked": 1}))


# ---------------------------------------------------------------- hostile text and malformed input


def hostile() -> Iterator[Row]:
    from test_hostile import CORE, HOSTILE, GullibleExtractor, gullible_answer
    from valind.extract.base import Item
    from valind.judges import Label
    from valind.judges.llm import FunctionBackend, LLMJudge
    from valind.schema import user

    prompt = [user("My grandmother died yesterday.")]
    names = sorted(HOSTILE)
    its = [Item(prompt, CORE), *(Item(prompt, HOSTILE[n]) for n in names)]
    ended: Counter[str] = Counter()
    res = GullibleExtractor().extract(its)
    ended.update("same as neutral" if r == res[0] else "STEERED" for r in res[1:])
    for label in Label:
        judge = LLMJudge(FunctionBackend(lambda c, lab=label.value: [gullible_answer(x, lab) for x in c], {"m": 1}), label)
        out = judge.judge(its)
        ended.update("same as neutral" if (j.decision, j.status) == (out[0].decision, out[0].status) else "STEERED" for j in out[1:])
    yield Row("hostile", f"{len(names)} injection texts x extractor + 3 LLM judges (gullible fake model)",
              faults=len(names) * 4, items=len(names) * 4, ended=ended)


def _outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ValindError as err:
        return f"own error ({type(err).__name__})"
    except Exception as err:  # noqa: BLE001 - the point of the count
        return f"CRASH ({type(err).__name__})"
    return "parsed"


def fuzz(n: int, tmp: Path) -> Iterator[Row]:
    from valind.extract.openai_backend import ChatClient
    from valind.extract.prompting import parse_values
    from valind.extract.score import parse_line
    from valind.ingest.readers import InputSpec, open_records
    from valind.judges import Label
    from valind.judges.llm import parse_decision
    from valind.judges.refusal import parse_wildguard

    rng = random.Random(0)
    jsonl = b"\n".join(orjson.dumps({"prompt": f"q{i}", "chosen": "a\u202e\u200b", "rejected": "b"}) for i in range(30))
    csv = b"prompt,chosen,rejected\n" + b"".join(f'q{i},"a, ""b""",c\n'.encode() for i in range(30))
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(300)], "chosen": ["a"] * 300, "rejected": ["b"] * 300}), buf, row_group_size=50)
    seeds = {".jsonl": jsonl, ".json": b"[" + jsonl.replace(b"\n", b",") + b"]", ".csv": csv, ".parquet": buf.getvalue(),
             ".jsonl.gz": gzip.compress(jsonl), ".csv.gz": gzip.compress(csv)}

    def mutate(data: bytes) -> bytes:
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op, i = rng.randrange(4), rng.randrange(max(len(data), 1))
            if op == 0:
                data = data[:i]
            elif op == 1 and data:
                data[i] = rng.randrange(256)
            elif op == 2:
                data[i:i] = rng.choice([b"\x00", b"\xff\xfe", b'"', b"\n", b"{", b"]", b",", b"\xed\xa0\x80", rng.randbytes(8)])
            else:
                del data[i:i + rng.randint(1, 64)]
        return bytes(data)

    ended: Counter[str] = Counter()
    for i in range(n):
        suffix = rng.choice(list(seeds))
        path = tmp / f"fuzz{i}{suffix}"
        path.write_bytes(mutate(seeds[suffix]))
        ended[_outcome(lambda p=path: list(open_records(InputSpec(str(p)), lambda r: None).rows))] += 1
    yield Row("fuzz", f"mutated input files ({', '.join(seeds)})", faults=n, items=n, ended=ended)

    answers = ['{"values": ["empathy", "humor"]}', '{"refusal": true}', "Response refusal: yes\n", '```json\n{"values": []}\n```']
    ended = Counter()
    for _ in range(n):
        text = mutate(rng.choice(answers).encode()).decode("utf-8", "replace")
        for parse in (parse_values, lambda t: parse_decision(t, rng.choice(list(Label))), parse_wildguard):
            ended[_outcome(lambda p=parse, t=text: p(t))] += 1
    yield Row("fuzz", "mutated model answers x 3 parsers", faults=3 * n, items=3 * n, ended=ended)

    ended = Counter()
    client = ChatClient(base_url="http://127.0.0.1:1/v1", api_key="")
    body = orjson.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})
    line = orjson.dumps({"response": "r", "prompt": [{"role": "user", "content": "p"}]})
    for _ in range(n):
        reply = client._reply(mutate(body))
        ended["server reply: " + ("parsed" if not isinstance(reply, Exception) else "counted failure")] += 1
        ended["input line: " + _outcome(lambda: parse_line(1, mutate(line)))] += 1
    yield Row("fuzz", "mutated server replies and score input lines", faults=2 * n, items=2 * n, ended=ended)


# ---------------------------------------------------------------- secrets


def secrets(tmp: Path) -> Iterator[Row]:
    import os

    from typer.testing import CliRunner

    from servers import Fault, FaultServer
    from test_secrets import KEY_ENV, SENTINEL, leaks, write_config
    from valind.cli import app

    os.environ[KEY_ENV] = SENTINEL
    ended: Counter[str] = Counter()
    try:
        for name, fault, commands in (("normal run", Fault.OK, ("ingest", "extract", "generate", "evaluate", "report")),
                                      ("401 echoing the key", Fault.ECHO_AUTH_401, ("ingest", "extract"))):
            root = tmp / name.replace(" ", "-")
            root.mkdir()
            with FaultServer(then=fault) as srv:
                config = str(write_config(root, srv.base_url))
                runs = [CliRunner().invoke(app, [c, "-w", str(root / "ws"), "-c", config]) for c in commands]
            shown = sum(SENTINEL in r.output for r in runs)
            files = leaks(root / "ws", root / "cache")
            ended[f"{name}: key in {len(files)} files, {shown} outputs"] += 1
        for field, value in (("extract__api_key", SENTINEL), ("extract__api_key_env", SENTINEL),
                             ("extract__base_url", f"http://u:{SENTINEL}@127.0.0.1:9/v1")):
            root = tmp / field
            root.mkdir()
            result = CliRunner().invoke(app, ["extract", "-w", str(root / "ws"), "-c", str(write_config(root, "http://127.0.0.1:9/v1", **{field: value}))])
            ended[f"key as {field.split('__')[1]}: {'refused, not echoed' if result.exit_code == 2 and SENTINEL not in result.output else 'LEAKED'}"] += 1
    finally:
        os.environ.pop(KEY_ENV, None)
    yield Row("secrets", "sentinel key through runs, a 401 and misplaced config", faults=sum(ended.values()), ended=ended)


# ---------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    head = ["area", "scenario", "faults", "resumed", "items", "lost", "repeated", "how each ended"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    total = Row("total", "", sum(r.faults for r in rows), sum(r.resumed for r in rows), sum(r.items for r in rows),
                sum(r.lost for r in rows), sum(r.repeated for r in rows))
    crashes = sum(v for r in rows for k, v in r.ended.items() if any(w in k for w in ("CRASH", "DIFFER", "WRONG", "STEERED", "LEAKED")))
    lines.append("| " + " | ".join(total.cells()[:-1]) + f" | {crashes} crashes, differences or leaks |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also kill `valind run` in every stage in a row (a few minutes)")
    ap.add_argument("--fuzz", type=int, default=300, help="mutated inputs per fuzz family")
    args = ap.parse_args()
    print(f"# bench/faults.py  {time.strftime('%Y-%m-%d')}  {platform.machine()} python {platform.python_version()}")
    print(f"# reproduce: python bench/faults.py{' --full' if args.full else ''} --fuzz {args.fuzz}")
    rows: list[Row] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="valind-faults-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name, part in (("crash", lambda: crash(args.full, tmp / "crash")), ("corrupt", lambda: corrupt(tmp / "corrupt")),
                           ("server", server), ("hostile", hostile), ("fuzz", lambda: fuzz(args.fuzz, tmp / "fuzz")),
                           ("secrets", lambda: secrets(tmp / "secrets"))):
            (tmp / name).mkdir()
            t = time.perf_counter()
            rows += list(part())
            print(f"# {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(table(rows))
    print(f"# {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
