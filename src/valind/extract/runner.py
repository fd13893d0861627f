"""Run items through an extractor with the cache: each unique unit once, saved batch by batch.

A unit is the response text (plus the conversation when the extractor reads it). Units found in
the cache are reused without a model call; the rest go to the extractor in batches of
``batch_size``, and each batch's successful results are written to the cache before the next
batch starts, so a run that is killed resumes where it stopped. Failures are returned with
their status and raw text and are never cached, so a re-run retries exactly them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import xxhash

from valind.cache import Cache
from valind.extract.base import Extraction, Extractor, Item

NAMESPACE = "extract"


def unit_id(item: Item, uses_prompt: bool) -> str:
    """32 hex chars identifying what the extractor sees of an item."""
    payload = [item.prompt, item.response] if uses_prompt else item.response
    return xxhash.xxh3_128_hexdigest(orjson.dumps(payload))


@dataclass
class RunStats:
    items: int = 0
    unique: int = 0
    reused: int = 0  # unique units answered from the cache
    computed: int = 0  # unique units sent to the extractor (model calls, before its own retries)
    failed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_extraction(
    extractor: Extractor,
    items: Sequence[Item],
    cache: Cache,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Extraction], list[str], RunStats]:
    """(results by unit id, the unit id of each item in order, counts); ``progress(done, total)`` in units."""
    identity = extractor.identity()
    ids = [unit_id(it, extractor.uses_prompt) for it in items]
    units: dict[str, Item] = {}
    for uid, it in zip(ids, items):
        units.setdefault(uid, it)
    keys = {uid: Cache.key(identity, uid) for uid in units}
    cached = cache.get_many(NAMESPACE, list(keys.values()))
    results: dict[str, Extraction] = {uid: Extraction.from_json(cached[k]) for uid, k in keys.items() if k in cached}
    stats = RunStats(items=len(items), unique=len(units), reused=len(results))
    todo = [uid for uid in units if uid not in results]
    if progress:
        progress(len(results), len(units))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        out = extractor.extract([units[uid] for uid in batch])
        if len(out) != len(batch):
            raise RuntimeError(f"{extractor.name} returned {len(out)} results for {len(batch)} items")
        good = {}
        for uid, res in zip(batch, out):
            results[uid] = res
            if res.ok:
                good[keys[uid]] = res.to_json()
            else:
                stats.failed[res.status.value] = stats.failed.get(res.status.value, 0) + 1
        cache.put_many(NAMESPACE, good)
        stats.computed += len(batch)
        if progress:
            progress(len(results), len(units))
    return results, ids, stats
