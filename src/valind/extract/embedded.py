"""The ``embedded`` extractor: offline on CPU, no LLM.

How a response is scored (``EMBEDDED_VERSION`` 1):

1. Split the response into sentences (at ``.``, ``!``, ``?`` followed by space, and at line breaks)
   and embed each with the packaged all-MiniLM-L6-v2 (valind.embedding).
2. Features: the normalised mean of the sentence embeddings (384); for each value, the highest
   cosine similarity of any sentence to the value's prototype (mean embedding of "name: definition"
   and its aliases); for each value, log(1 + number of its lexical cue patterns that match)
   (valind.extract.cues).
3. One logistic regression per value (one-vs-rest, C = 1, balanced class weights) fitted on the
   project's labelled responses (``data/labels/values_train.jsonl``, see docs/labelled-sets.md).
4. A value is expressed when its probability is at or above one global threshold, chosen as the
   lowest threshold whose 5-fold cross-validated micro precision on the training labels is at
   least 0.75 (so the operating point is set on the training data only). ``extract.threshold``
   overrides it.

Values of the vocabulary that have no training labels (a custom vocabulary) fall back to
zero-shot scoring: the best sentence-to-prototype similarity, expressed at or above 0.5. That
score is not calibrated; train labels for such values (``labels`` option) to do better.

The fitted weights are cached in ``<cache>/embedded/<hash>.npz``, keyed by the version, the
encoder, the vocabulary and the training labels.

Example: "I'm so sorry to hear that; it sounds exhausting. Please see a doctor soon." ->
``values=("empathy", "harm prevention")`` with per-value probabilities in ``scores``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from valind.config import ExtractConfig
from valind.embedding import Embedder, embedder
from valind.errors import InputError
from valind.extract.base import Extraction, Item, Status
from valind.extract.cues import compile_cues, cue_counts
from valind.values import Vocabulary
from valind.workspace import atomic_path, hash_file, hash_json

EMBEDDED_VERSION = 1
DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "data" / "labels" / "values_train.jsonl"
TARGET_CV_PRECISION = 0.75
ZERO_SHOT_THRESHOLD = 0.5
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    parts = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    return parts or [text]


def load_labels(path: Path, vocab: Vocabulary) -> tuple[list[str], np.ndarray]:
    """(responses, 0/1 matrix responses x vocabulary values) from a labelled JSONL file."""
    texts, rows = [], []
    index = {n: j for j, n in enumerate(vocab.names)}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
            texts.append(rec["response"])
            row = np.zeros(len(index), dtype=np.int8)
            for v in rec["values"]:
                if v in index:
                    row[index[v]] = 1
            rows.append(row)
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"bad labelled record: {err}", file=str(path), location=f"line {number}") from None
    return texts, np.array(rows)


class Featurizer:
    """Turns responses into the feature matrix described in the module docstring."""

    def __init__(self, vocab: Vocabulary, encoder: Embedder) -> None:
        self.encoder = encoder
        self.cues = compile_cues(vocab.names)
        protos = []
        for v in vocab.values:
            vecs = encoder.encode([f"{v.name}: {v.definition}", *v.aliases])
            m = vecs.mean(0)
            protos.append(m / np.linalg.norm(m))
        self.prototypes = np.array(protos, dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features, best sentence-prototype similarity per value)."""
        split = [sentences(t) for t in texts]
        flat = [s for ss in split for s in ss]
        emb = self.encoder.encode(flat)
        means, best = [], []
        k = 0
        for ss in split:
            block = emb[k:k + len(ss)]
            k += len(ss)
            m = block.mean(0)
            means.append(m / max(np.linalg.norm(m), 1e-12))
            best.append((block @ self.prototypes.T).max(0))
        cue = np.log1p(np.array([cue_counts(t, self.cues) for t in texts], dtype=np.float32))
        sims = np.array(best, dtype=np.float32).reshape(len(texts), -1)
        return np.hstack([np.array(means, dtype=np.float32).reshape(len(texts), -1), sims, cue.reshape(len(texts), -1)]), sims


def fit(features: np.ndarray, labels: np.ndarray, folds: int = 5) -> dict[str, np.ndarray]:
    """Fit one logistic regression per labelled value and the global threshold (see module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    trained = labels.sum(0) >= 2  # values with too few positives stay zero-shot
    cols = np.flatnonzero(trained)

    def models(x: np.ndarray, y: np.ndarray) -> list[Any]:
        return [LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit(x, y[:, j]) for j in cols]

    oof = np.zeros((len(labels), len(cols)))
    for train_idx, test_idx in KFold(folds, shuffle=True, random_state=0).split(features):
        fitted = models(features[train_idx], labels[train_idx])
        oof[test_idx] = np.column_stack([m.predict_proba(features[test_idx])[:, 1] for m in fitted])
    truth = labels[:, cols].astype(bool)
    threshold = 0.5
    for t in np.arange(0.30, 0.99, 0.01):
        predicted = oof >= t
        if predicted.sum() and (predicted & truth).sum() / predicted.sum() >= TARGET_CV_PRECISION:
            threshold = float(round(t, 2))
            break
    final = models(features, labels)
    coef = np.zeros((labels.shape[1], features.shape[1]), dtype=np.float32)
    intercept = np.zeros(labels.shape[1], dtype=np.float32)
    for j, m in zip(cols, final):
        coef[j], intercept[j] = m.coef_[0], m.intercept_[0]
    predicted = oof >= threshold
    return {"coef": coef, "intercept": intercept, "trained": trained, "threshold": np.float32(threshold),
            "cv_precision": np.float32((predicted & truth).sum() / max(predicted.sum(), 1)),
            "cv_recall": np.float32((predicted & truth).sum() / max(truth.sum(), 1))}


class EmbeddedExtractor:
    name: ClassVar[str] = "embedded"
    uses_prompt = False

    def __init__(self, vocab: Vocabulary, labels: Path, cache_dir: Path, threshold: float | None = None) -> None:
        self.vocab = vocab
        self.labels = labels
        self.labels_hash = hash_file(labels)
        self.encoder = embedder(cache_dir)
        self.featurize = Featurizer(vocab, self.encoder)
        self.params = self._fitted(cache_dir)
        self.threshold = float(self.params["threshold"]) if threshold is None else threshold

    @classmethod
    def from_config(cls, cfg: ExtractConfig, vocab: Vocabulary, cache_dir: Path) -> EmbeddedExtractor:
        labels = Path(cfg.labels).expanduser() if cfg.labels else DEFAULT_LABELS
        if not labels.is_file():
            raise InputError("labelled responses file not found", file=str(labels))
        return cls(vocab, labels, cache_dir, cfg.threshold)

    def _model_key(self) -> str:
        return hash_json({"version": EMBEDDED_VERSION, "encoder": self.encoder.identity(),
                          "vocabulary": self.vocab.fingerprint, "labels": self.labels_hash})

    def _fitted(self, cache_dir: Path) -> dict[str, np.ndarray]:
        path = cache_dir / "embedded" / f"{self._model_key()}.npz"
        if path.is_file():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        texts, labels = load_labels(self.labels, self.vocab)
        params = fit(self.featurize(texts)[0], labels)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **params)
        return params

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self._model_key(), "threshold": self.threshold}

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(vocabulary)) scores in [0, 1]: probabilities, or zero-shot similarities."""
        feats, sims = self.featurize(texts)
        logits = feats @ self.params["coef"].T + self.params["intercept"]
        probs = 1.0 / (1.0 + np.exp(-logits))
        trained = self.params["trained"]
        # zero-shot values: rescale so that ZERO_SHOT_THRESHOLD lands on the classifier threshold
        zero = np.clip(sims * (self.threshold / ZERO_SHOT_THRESHOLD), 0.0, 1.0)
        return np.where(trained, probs, zero)

    def extract(self, items: Sequence[Item]) -> list[Extraction]:
        if not items:
            return []
        scores = self.scores([it.response for it in items])
        names = self.vocab.names
        out = []
        for row in scores:
            chosen = tuple(sorted(names[j] for j in np.flatnonzero(row >= self.threshold)))
            top = sorted(((float(s), n) for s, n in zip(row, names)), reverse=True)[:3]
            raw = "top: " + ", ".join(f"{n} {s:.2f}" for s, n in top)
            out.append(Extraction(chosen, {n: round(float(s), 4) for n, s in zip(names, row)}, raw, Status.OK))
        return out
