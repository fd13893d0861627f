"""Several processes sharing one cache folder do not corrupt it.

Real processes, not threads: two extract stages on two workspaces sharing one cache folder at the
same time; writers racing over the same keys while a reader reads; a writer killed with SIGKILL
while the other goes on; a writer held up by another's long transaction; two processes upgrading a
cache file from before checksums at the same moment. Afterwards SQLite's integrity check passes,
every entry's checksum matches, and every result is the one its key stands for.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import write_jsonl
from valind.cache import Cache, entry_checksum


def sound(path: Path) -> int:
    """Check the file as a whole and entry by entry; returns the number of entries."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT namespace, key, value, checksum FROM entries").fetchall()
    finally:
        conn.close()
    for namespace, key, value, checksum in rows:
        assert checksum == entry_checksum(namespace, key, value)
        orjson.loads(value)
    return len(rows)


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


# --- two extract stages, two workspaces, one cache folder


def test_two_extract_stages_share_one_cache_folder(tmp_path: Path) -> None:
    pairs = [{"prompt": f"q{i}", "chosen": f"some humor {i}", "rejected": f"plain {i}"} for i in range(300)]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cache_dir": str(tmp_path / "cache"),
        "ingest": {"sources": [{"path": str(tmp_path / "pairs.jsonl"), "adapter": "generic", "name": "p"}]},
        "extract": {"extractor": "fake", "batch_size": 5},  # 120 small transactions each
    }))
    code = ("import sys; from valind.config import load_config; from valind.workspace import Workspace\n"
            "from valind.ingest import run_ingest; from valind.extract.stage import run_extract\n"
            "cfg = load_config(sys.argv[1]); ws = Workspace(sys.argv[2]); run_ingest(cfg, ws)\n"
            "r = run_extract(cfg, ws).report; print(r['model_calls'], r['reused_from_cache'])")
    procs = [spawn(code, str(config), str(tmp_path / f"ws{i}")) for i in range(2)]
    outs = [finish(p) for p in procs]
    calls = [tuple(map(int, out.split())) for out in outs]
    assert all(c + r == 600 for c, r in calls)  # each stage accounted for every unique response
    tables = [pq.read_table(next((tmp_path / f"ws{i}" / "extract").rglob("values.parquet"))).sort_by("response_id") for i in range(2)]
    assert tables[0].equals(tables[1])  # the same results, whichever process computed them
    assert sound(tmp_path / "cache" / "calls.sqlite") == 600


# --- racing writers over the same keys, with a reader


_WRITER = """
import sys
from pathlib import Path
from valind.cache import Cache
path, worker, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with Cache(path) as cache:
    for r in range(rounds):
        keys = [f"k{(r * 7 + i) % 300}" for i in range(20)]  # overlaps the other writer's keys
        cache.put_many("ns", {k: {"key": k, "pad": "x" * 300} for k in keys})
        got = cache.get_many("ns", keys)
        assert all(got[k]["key"] == k for k in keys), "read back another key's value"
print("ok")
"""

_READER = """
import sys, time
from pathlib import Path
from valind.cache import Cache
path, seconds = Path(sys.argv[1]), float(sys.argv[2])
seen = 0
with Cache(path) as cache:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = cache.get_many("ns", [f"k{i}" for i in range(300)])
        assert all(v["key"] == k for k, v in got.items())
        assert cache.damaged == 0
        seen = max(seen, len(got))
print(seen)
"""


def test_racing_writers_and_a_reader_keep_the_file_sound(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    Cache(path).close()
    writers = [spawn(_WRITER, str(path), str(w), "150") for w in range(2)]
    reader = spawn(_READER, str(path), "3")
    assert [finish(w).strip() for w in writers] == ["ok", "ok"]
    assert int(finish(reader)) > 0
    assert sound(path) == 300


# --- a writer killed mid-write, the other goes on


_WRITE_FOREVER = """
import sys
from pathlib import Path
from valind.cache import Cache
cache = Cache(Path(sys.argv[1]))
batch = 0
while True:
    cache.put_many("killed", {f"{batch}-{i}": {"batch": batch, "pad": "y" * 2000} for i in range(50)})
    batch += 1
    print(batch, flush=True)
"""


def test_a_writer_killed_mid_write_does_not_harm_the_other(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    Cache(path).close()
    victim = spawn(_WRITE_FOREVER, str(path))
    survivor = spawn(_WRITER, str(path), "1", "200")
    try:
        assert victim.stdout is not None
        for line in victim.stdout:
            if int(line) >= 20:
                break
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    assert finish(survivor).strip() == "ok"
    with Cache(path) as cache:
        killed = cache.count("killed")
        assert killed % 50 == 0 and killed >= 20 * 50  # whole batches only
        assert cache.count("ns") == 300
    assert sound(path) == 300 + killed


# --- a writer held up by another's transaction waits, it does not fail


_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT OR REPLACE INTO entries (namespace, key, value, created_at, checksum) VALUES ('hold', 'k', '1', 0, NULL)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def test_a_writer_waits_for_another_process_s_transaction(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    Cache(path).close()
    holder = spawn(_HOLD, str(path), "1.5")
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    start = time.monotonic()
    with Cache(path) as cache:
        cache.put("ns", "k", {"v": 1})  # waits for the lock (BUSY_TIMEOUT_S), no "database is locked"
        waited = time.monotonic() - start
        assert cache.get("ns", "k") == {"v": 1}
    finish(holder)
    assert waited >= 1.0


# --- two processes upgrade a file from before checksums at once


_OPEN_AND_WRITE = """
import sys
from pathlib import Path
from valind.cache import Cache
with Cache(Path(sys.argv[1])) as cache:
    assert cache.get("ns", "old") == {"a": 1}
    cache.put_many("ns", {f"{sys.argv[2]}-{i}": i for i in range(50)})
print("ok")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_upgrade_an_old_file_at_once(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE entries (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
                 "created_at REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID")
    conn.execute("INSERT INTO entries VALUES ('ns', 'old', ?, 0)", [orjson.dumps({"a": 1})])
    conn.commit()
    conn.close()
    procs = [spawn(_OPEN_AND_WRITE, str(path), f"p{i}") for i in range(2)]
    assert [finish(p).strip() for p in procs] == ["ok", "ok"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT COUNT(*) FROM entries").fetchone() == (101,)
    conn.close()


# --- several processes create the same new cache file at once


_CREATE_AND_WRITE = """
import sys, time
from pathlib import Path
from valind.cache import Cache
start = float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # all processes open the file in the same instant
with Cache(Path(sys.argv[1])) as cache:
    cache.put_many("ns", {f"{sys.argv[2]}-{i}": i for i in range(50)})
print("ok")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_processes_create_one_new_cache_file_at_once(tmp_path: Path, attempt: int) -> None:
    """Switching a new file to WAL needs it alone for a moment; the others wait instead of failing."""
    path = tmp_path / "new" / "calls.sqlite"
    start = time.time() + 1.5
    procs = [spawn(_CREATE_AND_WRITE, str(path), f"p{i}", str(start)) for i in range(4)]
    assert [finish(p).strip() for p in procs] == ["ok"] * 4
    assert sound(path) == 200
