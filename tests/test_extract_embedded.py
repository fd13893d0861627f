"""The embedded extractor for real: the packaged sentence encoder on CPU, fitted on the shipped labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from valind.config import validate_config
from valind.extract import Item, make_extractor
from valind.extract.embedded import EmbeddedExtractor
from valind.extract.quality import evaluate_extractor
from valind.values import load_vocabulary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture(scope="module")
def extractor(cache_dir: Path) -> EmbeddedExtractor:
    return make_extractor(validate_config({}).extract, load_vocabulary(), cache_dir)  # type: ignore[return-value]


def test_clear_cases(extractor: EmbeddedExtractor) -> None:
    out = extractor.extract([
        Item([], "I'm so sorry you're going through this; it sounds really lonely. Please be gentle with yourself."),
        Item([], "Just punch him in the face next time he says that. He'll learn."),
        Item([], "That would be illegal in most states; check your lease and talk to a tenant rights lawyer before you act."),
        Item([], "Paris is the capital of France."),
    ])
    assert "empathy" in out[0].values
    assert "violence" in out[1].values
    assert "legal awareness" in out[2].values
    assert out[3].values == ()
    assert all(o.ok and set(o.scores) == set(load_vocabulary().names) for o in out)


def test_fit_is_cached_and_deterministic(extractor: EmbeddedExtractor, cache_dir: Path) -> None:
    again = make_extractor(validate_config({}).extract, load_vocabulary(), cache_dir)
    assert again.identity() == extractor.identity()
    assert len(list((cache_dir / "embedded").glob("*.npz"))) == 1  # fitted once, reused
    items = [Item([], "Haha, nice try! But honestly I don't know the answer.")]
    assert again.extract(items) == extractor.extract(items)


def test_quality_on_the_shipped_eval_set(cache_dir: Path) -> None:
    """The target of the extractor: micro precision >= 0.70 at micro recall >= 0.50 (held-out labels)."""
    result = evaluate_extractor(validate_config({"cache_dir": str(cache_dir)}))
    micro = result["micro"]
    assert result["responses"] == 300 and result["failed"] == 0
    assert micro["precision"]["rate"] >= 0.70, micro
    assert micro["recall"]["rate"] >= 0.50, micro
