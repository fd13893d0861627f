"""Run items through an extractor with the cache (valind.batch): each unique unit once, resumable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from valind.batch import run_cached, unit_id
from valind.cache import Cache
from valind.extract.base import Extraction, Extractor, Item

NAMESPACE = "extract"
__all__ = ["NAMESPACE", "RunStats", "run_extraction", "unit_id"]


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
    run = run_cached(
        extractor.extract, items, identity=extractor.identity(), uses_prompt=extractor.uses_prompt,
        namespace=NAMESPACE, cache=cache, batch_size=batch_size, encode=Extraction.to_json,
        decode=Extraction.from_json, ok=lambda r: r.ok, name=extractor.name, progress=progress,
    )
    stats = RunStats(items=len(items), unique=len(run.results), reused=run.reused, computed=run.computed)
    for res in run.results.values():
        if not res.ok:
            stats.failed[res.status.value] = stats.failed.get(res.status.value, 0) + 1
    return run.results, run.ids, stats
