"""Value extraction: which vocabulary values each response expresses."""

from __future__ import annotations

from pathlib import Path

from valind.config import ExtractConfig
from valind.errors import UnknownNameError
from valind.extract.base import Extraction, Extractor, Item, Status
from valind.extract.prompting import Mode, ValueMapper
from valind.values import Vocabulary

BACKENDS = ("embedded", "hf", "vllm", "openai", "fake")


def make_extractor(cfg: ExtractConfig, vocab: Vocabulary, cache_dir: Path) -> Extractor:
    """Build the configured backend. Heavy libraries are imported only for the backend in use."""
    name = cfg.extractor
    if name not in BACKENDS:
        raise UnknownNameError("extractor", name, list(BACKENDS))
    if name == "fake":
        from valind.extract.fake import FakeExtractor

        return FakeExtractor(vocab)
    if name == "embedded":
        from valind.extract.embedded import EmbeddedExtractor

        return EmbeddedExtractor.from_config(cfg, vocab, cache_dir)
    mapper = _mapper(cfg, vocab, cache_dir)
    if name == "hf":
        from valind.extract.hf import HFExtractor

        return HFExtractor.from_config(cfg, vocab, mapper, cache_dir)
    if name == "vllm":
        from valind.extract.vllm_backend import VLLMExtractor

        return VLLMExtractor.from_config(cfg, vocab, mapper, cache_dir)
    from valind.extract.openai_backend import OpenAIExtractor

    return OpenAIExtractor.from_config(cfg, vocab, mapper, cache_dir)


def _mapper(cfg: ExtractConfig, vocab: Vocabulary, cache_dir: Path) -> ValueMapper:
    """Open mode maps free text through the packaged sentence encoder; closed mode needs only names and aliases."""
    if Mode(cfg.mode) is Mode.OPEN:
        from valind.embedding import embedder

        return ValueMapper(vocab, embedder(cache_dir).encode, cfg.map_threshold)
    return ValueMapper(vocab)


__all__ = ["BACKENDS", "Extraction", "Extractor", "Item", "Status", "make_extractor"]
