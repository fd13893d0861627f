"""Run items through a model-backed scorer with the cache: each unique unit once, saved batch by batch.

Shared by the extractors and the judges. A unit is what the scorer sees of an item: the response
text, plus the conversation when the scorer reads it. Units found in the cache are reused with no
model call; the rest go to the scorer in batches, and each batch's successful results are written
to the cache before the next batch starts, so a killed run resumes where it stopped. Failures are
returned but never cached, so a re-run retries exactly them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import xxhash

from valind.cache import Cache
from valind.extract.base import Item

R = TypeVar("R")


def unit_id(item: Item, uses_prompt: bool) -> str:
    """32 hex chars identifying what the scorer sees of an item."""
    payload = [item.prompt, item.response] if uses_prompt else item.response
    return xxhash.xxh3_128_hexdigest(orjson.dumps(payload))


@dataclass
class CachedRun(Generic[R]):
    results: dict[str, R]  # by unit id
    ids: list[str]  # the unit id of each item, in item order
    reused: int  # unique units answered from the cache
    computed: int  # unique units sent to the scorer

    def in_order(self) -> list[R]:
        return [self.results[uid] for uid in self.ids]


def run_cached(
    call: Callable[[list[Item]], list[R]],
    items: Sequence[Item],
    *,
    identity: dict[str, Any],
    uses_prompt: bool,
    namespace: str,
    cache: Cache | None,
    batch_size: int,
    encode: Callable[[R], Any],
    decode: Callable[[Any], R],
    ok: Callable[[R], bool],
    name: str = "scorer",
    progress: Callable[[int, int], None] | None = None,
) -> CachedRun[R]:
    """``progress(done, total)`` counts unique units."""
    ids = [unit_id(it, uses_prompt) for it in items]
    units: dict[str, Item] = {}
    for uid, it in zip(ids, items):
        units.setdefault(uid, it)
    keys = {uid: Cache.key(identity, uid) for uid in units}
    results: dict[str, R] = {}
    if cache is not None:
        cached = cache.get_many(namespace, list(keys.values()))
        results = {uid: decode(cached[k]) for uid, k in keys.items() if k in cached}
    reused = len(results)
    todo = [uid for uid in units if uid not in results]
    if progress:
        progress(len(results), len(units))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        out = call([units[uid] for uid in batch])
        if len(out) != len(batch):
            raise RuntimeError(f"{name} returned {len(out)} results for {len(batch)} items")
        results.update(zip(batch, out))
        if cache is not None:
            cache.put_many(namespace, {keys[uid]: encode(res) for uid, res in zip(batch, out) if ok(res)})
        if progress:
            progress(len(results), len(units))
    return CachedRun(results, ids, reused, len(todo))
