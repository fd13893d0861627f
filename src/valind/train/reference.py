"""Reference log-probs, computed once and shared by every cell of a base model through the cache.

DPO compares the policy with a frozen reference: here always the base model (with LoRA, the base
with the adapter disabled; with full fine-tuning, the weights before the first step). Its summed
log-probability of each response does not depend on the value, method, seed or beta being trained,
so a pair that appears in the subsets of several values needs one reference pass, not one per cell.

How TRL 1.16 consumes them. With ``DPOConfig(precompute_ref_log_probs=True)`` the trainer calls
``_precompute_ref_logps(dataset, name, batch_size)`` at the end of ``__init__`` on the tokenised
dataset; it runs the reference over every row and adds the float columns ``ref_chosen_logps`` /
``ref_rejected_logps``; the collator passes them through and ``_compute_loss`` reads them instead of
running a reference forward (no reference model is loaded: ``ref_model`` stays None). TRL itself
would recompute them for every trainer (its own file cache is keyed by the dataset and a hash of
all weights, so it is never shared across cells). ``CachedReferenceDPOTrainer`` overrides only that
method: it looks every sequence up in the SQLite cache, lets TRL's own ``_precompute_ref_logps``
compute the pairs with a missing sequence (same forward, same masking, same truncation: identical
values), stores them, and adds the two columns for all rows.

Cache key (namespace ``ref_logps``), one entry per tokenised sequence::

    Cache.key({"reference": <model identity>, "version": REF_VERSION, "max_length": 512,
               "truncation": "keep_start", "dtype": "float32", "bf16": false},
              {"prompt_ids": [...], "completion_ids": [...]})  ->  summed log-prob (float)

In: the reference model identity, the exact token ids of the prompt (so chat template and system
prompt) and of the response, everything that changes the value (cut length, precision). Out: the
value, method, seed, beta, batch sizes. Keying sequences rather than pair ids shares more: a pair
that is flipped in another value's subset has the same two sequences, and dpo and dpo+system
cells share nothing (their prompts differ), as it must be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from accelerate.utils import broadcast_object_list
from datasets import Dataset
from trl import DPOTrainer

from valind.cache import Cache

NAMESPACE = "ref_logps"
REF_VERSION = 1  # bump when the way a reference log-prob is computed changes


@dataclass
class ReferenceStats:
    """What the reference pass of one trainer did, in sequences (a pair is 2 sequences).

    ``computed``: sequences run through the reference model now; ``from_cache``: sequences whose
    log-prob came from the cache (reference forward passes saved).
    """

    pairs: int = 0
    sequences: int = 0
    computed: int = 0
    from_cache: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def sequence_keys(dataset: Dataset, identity: dict[str, Any], settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Cache keys of the chosen and of the rejected sequence of every row of a tokenised DPO dataset."""
    scope = {"reference": identity, "version": REF_VERSION, **settings}
    chosen, rejected = [], []
    for prompt_ids, chosen_ids, rejected_ids in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True):
        chosen.append(Cache.key(scope, {"prompt_ids": prompt_ids, "completion_ids": chosen_ids}))
        rejected.append(Cache.key(scope, {"prompt_ids": prompt_ids, "completion_ids": rejected_ids}))
    return chosen, rejected


class CachedReferenceDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` whose precomputed reference log-probs go through the shared cache.

    Use with ``precompute_ref_log_probs=True``; ``ref_stats`` tells what the reference pass did.
    """

    def __init__(self, *args: Any, ref_cache: Cache, ref_identity: dict[str, Any], **kwargs: Any) -> None:
        self.ref_cache = ref_cache
        self.ref_identity = ref_identity
        self.ref_stats = ReferenceStats()
        super().__init__(*args, **kwargs)

    def _ref_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "max_length": self.args.max_length, "truncation": self.args.truncation_mode,
            "dtype": str(self.model.dtype).removeprefix("torch."), "bf16": bool(self.args.bf16),
        }
        if self.ld_alpha is not None:
            settings["ld_alpha"] = self.ld_alpha
        return settings

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        chosen_keys, rejected_keys = sequence_keys(dataset, self.ref_identity, self._ref_settings())
        found = self.ref_cache.get_many(NAMESPACE, chosen_keys + rejected_keys)
        first_row: dict[tuple[str, str], int] = {}
        for i, pair in enumerate(zip(chosen_keys, rejected_keys, strict=True)):
            if (pair[0] not in found or pair[1] not in found) and pair not in first_row:
                first_row[pair] = i
        # Every process must run the same reference batches; rank 0's view of the cache decides.
        todo = [list(first_row.values())]
        broadcast_object_list(todo, from_process=0)
        rows = todo[0]

        computed: dict[str, float] = {}
        if rows:
            part = super()._precompute_ref_logps(dataset.select(rows).flatten_indices(), name, batch_size)
            for i, chosen, rejected in zip(rows, part["ref_chosen_logps"], part["ref_rejected_logps"], strict=True):
                computed[chosen_keys[i]] = float(chosen)
                computed[rejected_keys[i]] = float(rejected)
            if self.accelerator.is_main_process:
                self.ref_cache.put_many(NAMESPACE, computed)
        values = {**found, **computed}

        n = len(chosen_keys)
        self.ref_stats.pairs += n
        self.ref_stats.sequences += 2 * n
        self.ref_stats.computed += 2 * len(rows)
        self.ref_stats.from_cache += 2 * n - 2 * len(rows)
        dataset = dataset.add_column("ref_chosen_logps", [values[k] for k in chosen_keys])
        return dataset.add_column("ref_rejected_logps", [values[k] for k in rejected_keys])
