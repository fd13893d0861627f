"""A content-addressed cache of model calls in one SQLite file, shared by every stage that calls a model.

What goes into a key (see ``Cache.key``): everything that changes the output, i.e. the model identity
(name + revision, or a file hash for local weights), the rendered prompt or item content, the decoding
settings (temperature, max new tokens, ...), and a version number of the extractor or judge, bumped
whenever its prompt or parsing changes. A seed goes in only for sampled outputs. What stays out:
settings that do not change the output, such as timeouts, retries, batch size and concurrency.

Failures are never cached: there is only ``put`` for results, and callers store a result only once it
parsed. A rerun therefore retries exactly the failed calls.

Example::

    identity = {"model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "7ae557", "extractor": "values", "version": 3}
    keys = {item_id: Cache.key(identity, {"prompt": text, "temperature": 0.0}) for item_id, text in prompts.items()}
    with Cache(workspace / ".valind" / "cache.sqlite") as cache:
        done = cache.get_many("extract", list(keys.values()))  # only the hits
        ...  # call the model for the rest, keep the results that parsed
        cache.put_many("extract", {keys[item_id]: result for item_id, result in parsed.items()})

Several processes may share one file: SQLite's WAL mode lets readers run beside one writer, and a
writer waits up to ``BUSY_TIMEOUT_S`` for the write lock instead of failing with "database is locked".

Damage is detected, never trusted: opening runs SQLite's ``quick_check`` (a file that is not a
sound database raises CacheCorrupted, which says it can be deleted), a query that meets a damaged
page raises CacheCorrupted too, and every entry carries a checksum of its namespace, key and value
(XXH3-64), so a value whose bytes changed on disk is treated as a miss (counted in ``damaged``,
logged) and recomputed, then overwritten. Entries written before checksums existed are trusted when
their value is valid JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import xxhash

from valind import faults
from valind.errors import ValindError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's write lock
CHUNK = 500  # keys per IN (...) query; SQLite's variable limit is 999 in old builds
KEY_HEX_CHARS = 32  # 128-bit digest: collisions are out of reach for any realistic cache size

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,  -- orjson-encoded JSON
    created_at REAL NOT NULL,  -- Unix time, seconds
    checksum   TEXT,           -- entry_checksum(namespace, key, value); NULL in files from before checksums
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""


class CacheCorrupted(ValindError):
    """The cache file is not a readable SQLite database."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path}: cache file is corrupted ({detail}). It only holds re-computable model results, so it "
            f"can be deleted (with any {path.name}-wal / {path.name}-shm beside it); the next run recomputes them."
        )
        self.path = path


class Cache:
    """A (namespace, key) -> JSON value store; one per process, used from one thread at a time.

    ``hits`` and ``misses`` count the distinct keys looked up by ``get`` / ``get_many``; ``damaged``
    the entries found whose checksum did not match (they count as misses).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        self._lock = threading.Lock()  # the connection may be handed between threads, never shared at once
        self._conn = _connect(self.path)

    @staticmethod
    def key(identity: dict[str, Any], payload: Any) -> str:
        """A 32-hex-char digest of ``[identity, payload]`` as canonical JSON (dict keys sorted at every level).

        >>> Cache.key({"model": "m", "version": 1}, {"prompt": "Hi", "temperature": 0.0})
        'e77c3615f5d8f86d2c449166812066b9'

        The same for ``{"version": 1, "model": "m"}``; different for ``"version": 2`` or another prompt.
        """
        canonical = orjson.dumps([identity, payload], option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(canonical, digest_size=KEY_HEX_CHARS // 2).hexdigest()

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        """The cached values of those ``keys`` that are present (misses are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        damaged = 0
        with self._lock, self._guard():
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, value, checksum FROM entries WHERE namespace = ? AND key IN ({marks})", [namespace, *chunk]
                )
                for key, value, checksum in rows:
                    decoded = _decode(namespace, key, value, checksum)
                    if decoded is _DAMAGED:
                        damaged += 1
                    else:
                        found[key] = decoded
        if damaged:
            log.warning("%s: %d damaged %s entries (checksum mismatch) are recomputed", self.path, damaged, namespace)
        self.damaged += damaged
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """The cached value, or ``default`` on a miss (use ``get_many`` to tell a cached null from a miss)."""
        return self.get_many(namespace, [key]).get(key, default)

    def put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        """Store (or overwrite) all ``items`` in one transaction: after a crash either all are there or none."""
        now = time.time()
        rows = []
        for key, value in items.items():  # encode before locking
            data = orjson.dumps(value)
            rows.append((namespace, key, data, now, entry_checksum(namespace, key, data)))
        if not rows:
            return
        with self._lock, self._guard():
            # IMMEDIATE takes the write lock up front, so the busy timeout applies; a deferred transaction
            # upgrading from read to write can fail at once with "database is locked".
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO entries (namespace, key, value, created_at, checksum) VALUES (?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        faults.point("cache", namespace)

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store (or overwrite) one successful result."""
        self.put_many(namespace, {key: value})

    def count(self, namespace: str) -> int:
        """Number of entries in ``namespace``."""
        with self._lock, self._guard():
            (n,) = self._conn.execute("SELECT COUNT(*) FROM entries WHERE namespace = ?", [namespace]).fetchone()
        return n

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite's "database disk image is malformed" met mid-run into CacheCorrupted."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if _is_corruption(e):
                raise CacheCorrupted(self.path, str(e)) from e
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def entry_checksum(namespace: str, key: str, value: bytes) -> str:
    """XXH3-64 of one entry (namespace, key and encoded value), as 16 hex chars."""
    return xxhash.xxh3_64_hexdigest(b"\0".join((namespace.encode(), key.encode(), value)))


_DAMAGED = object()


def _decode(namespace: str, key: str, value: bytes, checksum: str | None) -> Any:
    """The entry's value, or _DAMAGED when its checksum does not match (or, without one, it is not JSON)."""
    if checksum is not None and checksum != entry_checksum(namespace, key, value):
        return _DAMAGED
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _DAMAGED


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    return getattr(e, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _add_checksum_column(conn: sqlite3.Connection) -> None:
    """Files from before checksums lack the column; add it once (another process may be doing the same)."""
    def has_it() -> bool:
        return any(row[1] == "checksum" for row in conn.execute("PRAGMA table_info(entries)"))

    if has_it():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not has_it():
            conn.execute("ALTER TABLE entries ADD COLUMN checksum TEXT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode. Switching a new (or pre-WAL) file needs it to itself for a moment, and
    SQLite answers "database is locked" at once rather than waiting when another process opens it too:
    so wait here, as a writer would, up to BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and check it; raise CacheCorrupted if it is not a sound SQLite database."""
    # timeout sets SQLite's busy_timeout; isolation_level=None: no implicit transactions, put_many opens its own.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")  # a killed process loses no commit; a power cut only the last ones
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]  # reads the whole file, ~0.5 s/GB
        if problems == ["ok"]:
            conn.execute(_SCHEMA)
            _add_checksum_column(conn)
            return conn
    except sqlite3.DatabaseError as e:
        conn.close()
        if _is_corruption(e):
            raise CacheCorrupted(path, str(e)) from e
        raise
    conn.close()
    raise CacheCorrupted(path, "; ".join(problems))
