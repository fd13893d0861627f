"""The ``openai`` backend: answers from any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, TGI).

Requests go through ``valind.extract.openai_backend.ChatClient`` (at most ``concurrency`` in
flight, transport retries with back-off, one failure per request, the API key only from the
environment variable ``api_key_env`` and never in errors or logs). One request per answer::

    {"model": <served name>, "messages": [...], "max_tokens": 128, "temperature": 0.0}
    + "top_p" and "seed" (the request's own) when sampling

The served name of a cell (``model_names`` maps labels to names): by default the model spec for a
base or ``system`` cell, and the cell label for a trained cell, e.g. with vLLM::

    vllm serve meta-llama/Llama-3.1-8B-Instruct --enable-lora \\
        --lora-modules Llama-3.1-8B-Instruct--empathy--dpo+system-seed0-beta0.1=WS/train/.../adapter

A server cannot be fingerprinted, so the identity is the server URL and the served name, plus the
local fingerprint of a trained cell's adapter or checkpoint (re-training a cell changes its key
even when the server keeps the name). ``finish_reason`` and token counts are the server's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from valind.errors import ConfigError
from valind.extract.llm import CallFailed
from valind.extract.openai_backend import ChatClient
from valind.generate.base import Completion, Decoding, GenerationRequest
from valind.generate.cells import CellKind, ModelCell, artifact_fingerprint
from valind.generate.config import GenerateConfig

log = logging.getLogger(__name__)


class OpenAIGenerator:
    name: ClassVar[str] = "openai"

    def __init__(self, client: ChatClient, model: str, decoding: Decoding, identity: dict[str, Any]) -> None:
        self.client = client
        self.model = model
        self.decoding = decoding
        self._identity = identity

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def request(self, req: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": req.messages, "max_tokens": self.decoding.max_new_tokens,
                                "temperature": self.decoding.temperature}
        if self.decoding.sampling:
            body.update(top_p=self.decoding.top_p, seed=req.seed)
        return body

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion | CallFailed]:
        replies = self.client.complete([self.request(r) for r in requests])
        out: list[Completion | CallFailed] = [
            r if isinstance(r, CallFailed) else Completion(r.text, r.finish_reason or "stop", r.completion_tokens) for r in replies
        ]
        failures = [a for a in out if isinstance(a, CallFailed)]
        if failures:
            log.warning("openai: %d of %d requests to %s failed; first: %s", len(failures), len(out), self.client.base_url, failures[0])
        return out


class OpenAIBackend:
    name: ClassVar[str] = "openai"

    def __init__(self, cfg: GenerateConfig, cells: Sequence[ModelCell]) -> None:
        if not cfg.base_url:
            raise ConfigError("generate.base_url: the openai backend needs the server URL, e.g. http://127.0.0.1:8000/v1")
        unknown = sorted(set(cfg.model_names) - {c.label for c in cells})
        if unknown:
            raise ConfigError(f"generate.model_names: no cell is labelled {unknown[0]!r}; cells: {', '.join(c.label for c in cells)}")
        self.base_url = cfg.base_url
        self.model_names = dict(cfg.model_names)
        self.decoding = Decoding.from_config(cfg)
        self.client = ChatClient(base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env, ""), concurrency=cfg.concurrency,
                                 timeout_s=cfg.timeout_s, request_retries=cfg.request_retries)

    def served_name(self, cell: ModelCell) -> str:
        if cell.label in self.model_names:
            return self.model_names[cell.label]
        return cell.base if cell.kind in (CellKind.BASE, CellKind.SYSTEM) else cell.label

    def identity(self, cell: ModelCell) -> dict[str, Any]:
        ident: dict[str, Any] = {"backend": self.name, "base_url": self.base_url, "model": self.served_name(cell),
                                 **self.decoding.identity()}
        if cell.path is not None:
            ident["artifact"] = artifact_fingerprint(cell)
        return ident

    def open(self, cell: ModelCell) -> OpenAIGenerator:
        return OpenAIGenerator(self.client, self.served_name(cell), self.decoding, self.identity(cell))

    def close(self) -> None:
        return None
