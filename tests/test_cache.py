from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from valind.cache import Cache, CacheCorrupted
from valind.errors import ValindError

IDENTITY = {"model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "7ae557", "extractor": "values", "version": 3}
PAYLOAD = {"prompt": "Which values does this reply express?", "temperature": 0.0, "max_new_tokens": 256}


def test_round_trip_of_json_values(tmp_path: Path) -> None:
    values = {
        "a": {"values": ["honesty", "care"], "text": "naïve café — 价值 🙂", "nested": {"x": [1, 2.5, None]}},
        "b": [1, -2, 3.141592653589793, 1e-300, "s"],
        "c": 0.1,
        "d": None,
        "e": "plain",
    }
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.put_many("extract", values)
        assert cache.get_many("extract", list(values)) == values
        assert cache.get("extract", "a") == values["a"]
        cache.put("extract", "f", {"k": 1})
        assert cache.get("extract", "f") == {"k": 1}
        assert cache.count("extract") == 6


def test_namespaces_are_isolated(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.put("extract", "k", "from extract")
        cache.put("judge", "k", "from judge")
        assert cache.get("extract", "k") == "from extract"
        assert cache.get("judge", "k") == "from judge"
        assert cache.get("generate", "k", default="missing") == "missing"
        assert (cache.count("extract"), cache.count("judge"), cache.count("generate")) == (1, 1, 0)


def test_hits_and_misses_are_counted(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.put_many("ns", {"a": 1, "b": None})
        assert (cache.hits, cache.misses) == (0, 0)
        assert cache.get_many("ns", ["a", "b", "x", "y", "z"]) == {"a": 1, "b": None}  # a cached null is a hit
        assert (cache.hits, cache.misses) == (2, 3)
        assert cache.get("ns", "a") == 1
        assert cache.get("ns", "nope") is None
        assert (cache.hits, cache.misses) == (3, 4)


def test_get_many_beyond_the_sqlite_variable_limit(tmp_path: Path) -> None:
    items = {Cache.key(IDENTITY, i): {"i": i} for i in range(2500)}
    asked = list(items) + [Cache.key(IDENTITY, -i) for i in range(1, 1001)]  # 3500 keys, 1000 of them misses
    with Cache(tmp_path / "c.sqlite") as cache:
        # Lower this connection's limit to that of older SQLite builds, so an unchunked query would fail here.
        cache._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        cache.put_many("ns", items)
        found = cache.get_many("ns", asked)
        assert found == items
        assert (cache.hits, cache.misses) == (2500, 1000)


def test_put_many_overwrites(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.put_many("ns", {"a": 1, "b": 2})
        cache.put_many("ns", {"b": 20, "c": 30})
        assert cache.get_many("ns", ["a", "b", "c"]) == {"a": 1, "b": 20, "c": 30}
        assert cache.count("ns") == 3


def test_unserialisable_value_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(TypeError):
            cache.put_many("ns", {"ok": 1, "bad": object()})
        assert cache.count("ns") == 0


def test_key_is_stable_and_canonical() -> None:
    key = Cache.key(IDENTITY, PAYLOAD)
    assert len(key) == 32 and int(key, 16) >= 0
    reordered_identity = dict(reversed(list(IDENTITY.items())))
    reordered_payload = dict(reversed(list(PAYLOAD.items())))
    assert Cache.key(reordered_identity, reordered_payload) == key
    assert Cache.key({"outer": {"b": 1, "a": 2}}, None) == Cache.key({"outer": {"a": 2, "b": 1}}, None)
    # Pinned: a key that changes between releases would silently invalidate every cache.
    assert Cache.key({"model": "m", "version": 1}, {"prompt": "Hi", "temperature": 0.0}) == (
        "e77c3615f5d8f86d2c449166812066b9"
    )


@pytest.mark.parametrize(
    ("identity", "payload"),
    [
        ({**IDENTITY, "version": 4}, PAYLOAD),
        ({**IDENTITY, "revision": "000000"}, PAYLOAD),
        ({**IDENTITY, "model": "other"}, PAYLOAD),
        ({k: v for k, v in IDENTITY.items() if k != "revision"}, PAYLOAD),
        (IDENTITY, {**PAYLOAD, "prompt": PAYLOAD["prompt"] + " "}),
        (IDENTITY, {**PAYLOAD, "temperature": 0.7}),
        (IDENTITY, {**PAYLOAD, "seed": 0}),
        (IDENTITY, [PAYLOAD]),
    ],
)
def test_any_change_changes_the_key(identity: dict, payload: object) -> None:
    assert Cache.key(identity, payload) != Cache.key(IDENTITY, PAYLOAD)


def test_identity_and_payload_are_not_interchangeable() -> None:
    assert Cache.key({"a": 1}, {}) != Cache.key({}, {"a": 1})


def test_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "c.sqlite"  # parent folders are created
    with Cache(path) as cache:
        cache.put_many("ns", {"a": [1, 2], "b": {"x": "y"}})
    with Cache(path) as cache:
        assert cache.get_many("ns", ["a", "b"]) == {"a": [1, 2], "b": {"x": "y"}}
        assert cache.count("ns") == 2


def test_usable_from_another_thread(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        worker = threading.Thread(target=cache.put_many, args=("ns", {"from-thread": 1}))
        worker.start()
        worker.join()
        assert cache.get("ns", "from-thread") == 1


def _write_concurrently(path: str, worker: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """Spawned: write 500 items in batches of 10, reading between writes."""
    with Cache(Path(path)) as cache:
        barrier.wait()
        for batch in range(50):
            keys = [f"w{worker}-{batch * 10 + i}" for i in range(10)]
            cache.put_many("ns", {k: {"worker": worker, "key": k} for k in keys})
            assert len(cache.get_many("ns", keys)) == 10


def test_two_processes_write_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Cache(path).close()  # both workers open an existing database
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_write_concurrently, args=(str(path), w, barrier)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]  # a "database is locked" error would exit 1
    with Cache(path) as cache:
        assert cache.count("ns") == 1000
        assert cache.get("ns", "w1-499") == {"worker": 1, "key": "w1-499"}


_WRITE_FOREVER = """
import sys
from pathlib import Path
from valind.cache import Cache
cache = Cache(Path(sys.argv[1]))
batch = 0
while True:
    cache.put_many("ns", {f"{batch}-{i}": {"batch": batch, "pad": "x" * 500} for i in range(25)})
    batch += 1
    print(batch, flush=True)
"""


def test_sigkill_mid_write_keeps_every_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # each line: the number of batches committed so far
            committed = int(line)
            if committed >= 40:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 40
    with Cache(path) as cache:  # opens: WAL recovery drops any half-written transaction
        n = cache.count("ns")
        assert n % 25 == 0
        assert n >= committed * 25
        last = n // 25 - 1
        assert len(cache.get_many("ns", [f"{last}-{i}" for i in range(25)])) == 25


def _real_cache_file(path: Path) -> Path:
    with Cache(path) as cache:
        cache.put_many("ns", {Cache.key(IDENTITY, i): {"text": "x" * 200, "i": i} for i in range(2000)})
    return path


def test_random_bytes_file_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(CacheCorrupted, match="can be deleted") as raised:
        Cache(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, ValindError)
    assert path.read_bytes() != b""  # reported, not deleted


def test_truncated_file_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = _real_cache_file(tmp_path / "truncated.sqlite")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2 + 123)  # mid-page
    with pytest.raises(CacheCorrupted) as raised:
        Cache(path)
    assert str(path) in str(raised.value)
    assert path.exists()


def test_overwritten_page_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = _real_cache_file(tmp_path / "scribbled.sqlite")
    with open(path, "r+b") as f:
        f.seek(4096 * 3)  # inside a b-tree page, past the header
        f.write(random.Random(0).randbytes(4096))  # fixed bytes: the same damage every run
    with pytest.raises(CacheCorrupted, match="scribbled.sqlite"):
        Cache(path)
