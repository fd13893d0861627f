"""Value extraction through any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, TGI, OpenAI).

``generate`` sends one ``/chat/completions`` request per conversation, at most ``concurrency``
in flight, and returns the answers in input order. Retry rules, two bounded layers:

1. Transport, per request, inside the ``openai`` client: a request that times out
   (``timeout_s`` seconds), loses its connection, or gets HTTP 408, 409, 429 or 5xx is sent again
   up to ``request_retries`` times, after the server's ``Retry-After`` when it gives one of at
   most 120 s (a longer one is not waited for: the request fails at once), else after
   0.5 s, 1 s, 2 s, 4 s, 8 s, 8 s, ... less up to 25 % jitter. Other answers (400, 401, 403,
   404, 422, a body that is not a chat completion) are not retried. A request that fails for
   good becomes ``CallFailed("<kind>: <message>")`` for its item only (kinds: ``http 500``,
   ``timeout``, ``connection``, ``bad response``, ``no content``); ChatExtractor records it as
   Status.ERROR, it is never cached, and the other items go on.
2. Content, per item, in ChatExtractor: an answer that does not parse is asked again with a
   repair turn up to ``max_retries`` times, then kept as PARSE_ERROR with its raw text.

So one item costs at most (1 + request_retries) x (1 + max_retries) HTTP requests.

The API key comes only from the environment variable named by ``api_key_env`` (a placeholder
when unset: local servers need none). It never shows in identity(), repr(), logs or error texts.

Servers differ in how ``response_format`` carries a JSON schema; see SchemaFormat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import orjson
from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI

from valind.config import ExtractConfig
from valind.errors import ConfigError
from valind.extract.llm import CallFailed, ChatExtractor
from valind.extract.prompting import Mode, ValueMapper
from valind.extract.prompting import json_schema as answer_schema
from valind.schema import Message
from valind.values import Vocabulary

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "not-needed"  # sent when the key variable is unset; the client refuses an empty key
_MAX_DETAIL = 300  # characters of a server's error text kept in a CallFailed
_ERROR_CODE_PREFIX = re.compile(r"^Error code: \d+ - ")


class SchemaFormat(StrEnum):
    """How ``response_format`` carries the JSON schema of the answer.

    - ``json_schema``: OpenAI's form, ``{"type": "json_schema", "json_schema": {"name", "schema",
      "strict"}}``; vLLM, SGLang, llama.cpp's ``llama-server``, TGI and OpenAI accept it.
    - ``json_object``: ``{"type": "json_object", "schema": ...}``; the form llama-cpp-python's
      server (``python -m llama_cpp.server``) accepts. It answers the OpenAI form with HTTP 500.
    """

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self is SchemaFormat.JSON_OBJECT:
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "values", "schema": schema, "strict": True}}


class _Secret:
    """Holds the API key so that a repr, a log line or a traceback shows '***' instead."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'***'"

    def scrub(self, text: str) -> str:
        return text.replace(self.value, "***") if self.value else text


class OpenAIExtractor(ChatExtractor):
    """A ChatExtractor whose model sits behind an OpenAI-compatible HTTP server."""

    name: ClassVar[str] = "openai"

    def __init__(self, vocab: Vocabulary, *, base_url: str, model: str, api_key: str = "",
                 mode: Mode = Mode.CLOSED, with_prompt: bool = True, max_retries: int = 2,
                 mapper: ValueMapper | None = None, max_new_tokens: int = 96, temperature: float = 0.0,
                 seed: int = 0, json_schema: bool = True, schema_format: SchemaFormat = SchemaFormat.JSON_SCHEMA,
                 concurrency: int = 8, timeout_s: float = 120.0, request_retries: int = 5) -> None:
        super().__init__(vocab, mode=mode, with_prompt=with_prompt, max_retries=max_retries, mapper=mapper)
        self.base_url = base_url
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.json_schema = json_schema
        self.schema_format = schema_format
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.request_retries = request_retries
        self._client = ChatClient(base_url=base_url, api_key=api_key, concurrency=concurrency, timeout_s=timeout_s,
                                  request_retries=request_retries)

    @classmethod
    def from_config(cls, cfg: ExtractConfig, vocab: Vocabulary, mapper: ValueMapper | None,
                    cache_dir: Path) -> OpenAIExtractor:
        """Build from the extract config; ``cache_dir`` is unused (the stage caches by identity())."""
        if not cfg.base_url:
            raise ConfigError("extract.base_url: the openai extractor needs the server URL, e.g. http://127.0.0.1:8000/v1")
        if not cfg.model:
            raise ConfigError("extract.model: the openai extractor needs the model name the server serves (GET <base_url>/models lists them)")
        return cls(
            vocab, base_url=cfg.base_url, model=cfg.model, api_key=os.environ.get(cfg.api_key_env, ""),
            mode=Mode(cfg.mode), with_prompt=cfg.with_prompt, max_retries=cfg.max_retries, mapper=mapper,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
            json_schema=cfg.json_schema, concurrency=cfg.concurrency, timeout_s=cfg.timeout_s,
            request_retries=cfg.request_retries, schema_format=SchemaFormat(cfg.schema_format),
        )

    def __repr__(self) -> str:
        return (f"OpenAIExtractor(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode.value!r}, "
                f"concurrency={self.concurrency})")

    def model_identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"base_url": self.base_url, "model": self.model, "max_new_tokens": self.max_new_tokens,
                                 "temperature": self.temperature, "json_schema": self.json_schema}
        if self.temperature > 0:
            ident["seed"] = self.seed
        return ident

    def generate(self, conversations: list[list[Message]]) -> list[str | CallFailed]:
        """One answer text or CallFailed per conversation, in input order (retry rules: module docstring)."""
        if not conversations:
            return []
        answers = [r if isinstance(r, CallFailed) else r.text for r in self._client.complete([self._request(m) for m in conversations])]
        failures = [a for a in answers if isinstance(a, CallFailed)]
        if failures:
            log.warning("openai: %d of %d requests to %s failed; first: %s",
                        len(failures), len(answers), self.base_url, failures[0])
        return answers

    def _request(self, messages: list[Message]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens,
                                   "temperature": self.temperature}
        if self.temperature > 0:
            request["seed"] = self.seed
        if self.json_schema:
            request["response_format"] = self.schema_format.response_format(answer_schema(self.vocab, self.mode))
        return request


class ChatReply(NamedTuple):
    """The first choice of a chat completion: its text, ``finish_reason`` (``stop``, ``length``, ...,
    or None when the server leaves it out) and ``usage.completion_tokens`` (None when absent)."""

    text: str
    finish_reason: str | None
    completion_tokens: int | None


class ChatClient:
    """Chat completions from an OpenAI-compatible server: at most ``concurrency`` requests in flight,
    transport retries inside the ``openai`` client, one ChatReply or CallFailed per request body, in
    input order (the rules of layer 1 in the module doc). Used by this extractor and by the ``openai``
    generation backend (``valind.generate.openai_backend``)."""

    def __init__(self, *, base_url: str, api_key: str, concurrency: int = 8, timeout_s: float = 120.0,
                 request_retries: int = 5) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.request_retries = request_retries
        self._key = _Secret(api_key or PLACEHOLDER_KEY)

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    def complete(self, requests: list[dict[str, Any]]) -> list[ChatReply | CallFailed]:
        """Send every request body (``model``, ``messages``, ...); the replies in input order."""
        if not requests:
            return []
        return asyncio.run(self._complete_all(requests))

    async def _complete_all(self, requests: list[dict[str, Any]]) -> list[ChatReply | CallFailed]:
        gate = asyncio.Semaphore(self.concurrency)
        async with AsyncOpenAI(base_url=self.base_url, api_key=self._key.value, timeout=self.timeout_s,
                               max_retries=self.request_retries) as client:

            async def one(request: dict[str, Any]) -> ChatReply | CallFailed:
                async with gate:
                    return await self._call(client, request)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _call(self, client: AsyncOpenAI, request: dict[str, Any]) -> ChatReply | CallFailed:
        """One request, retried by the client; a failure that remains is returned, not raised."""
        try:
            # The raw body, parsed here: a malformed one then fails this item only.
            response = await client.chat.completions.with_raw_response.create(**request)
        except APITimeoutError:  # a subclass of APIConnectionError: test it first
            return self._failed("timeout", f"no answer within {self.timeout_s:g} s, {1 + self.request_retries} attempts")
        except APIConnectionError as err:
            cause = err.__cause__
            return self._failed("connection", f"{type(cause).__name__}: {cause}" if cause else err.message)
        except APIStatusError as err:
            return self._failed(f"http {err.status_code}", _ERROR_CODE_PREFIX.sub("", err.message))
        return self._reply(response.content)

    def _reply(self, body: bytes) -> ChatReply | CallFailed:
        """The first choice's message content. An empty string is returned (the extractor then asks
        for a repair); a missing or null content is a failed call ("no content")."""
        try:
            doc = orjson.loads(body)
            choice = doc["choices"][0]
            content = choice["message"]["content"]
        except orjson.JSONDecodeError:
            return self._failed("bad response", f"body is not JSON: {body[:120]!r}")
        except (KeyError, IndexError, TypeError):
            return self._failed("bad response", f"not a chat completion: {body[:120]!r}")
        if not isinstance(content, str):
            return self._failed("no content", f"finish_reason={choice.get('finish_reason')!r}")
        usage = doc.get("usage") if isinstance(doc, dict) else None
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        reason = choice.get("finish_reason")
        return ChatReply(content, reason if isinstance(reason, str) else None, tokens if isinstance(tokens, int) else None)

    def _failed(self, kind: str, detail: str) -> CallFailed:
        # Scrub before cutting, so that no cut-off piece of the key survives.
        return CallFailed(self._key.scrub(f"{kind}: {detail}")[:_MAX_DETAIL])
