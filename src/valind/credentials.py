"""Where API keys may come from (the environment only) and the config checks that keep them out of files.

A key is read from the environment variable that ``api_key_env`` names, at the moment a client is
built; it never enters a config, the manifest, a stage record, a cache key, a log line or an error
message. The config refuses the usual ways a key ends up in the wrong place, without echoing it:

- ``api_key_env: sk-...`` (the key itself instead of a variable name): not a variable name;
- ``api_key: sk-...`` or ``token: ...`` in a section: an unknown field, reported by name only;
- ``base_url: https://user:sk-...@host/v1`` or ``...?api_key=sk-...``: credentials in a URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Fields whose given value an error message never shows: it may be a key put in the wrong place.
SECRET_FIELD = re.compile(r"(^|_)(key|token|secret|password|passwd|auth|authorization|credentials?|bearer|url)(_|$)", re.IGNORECASE)


def check_key_env_name(name: str) -> str:
    """``api_key_env`` must be the *name* of an environment variable, e.g. OPENAI_API_KEY."""
    if not ENV_NAME.fullmatch(name):
        raise ValueError(
            "must be the name of the environment variable that holds the API key (letters, digits and '_', "
            "e.g. OPENAI_API_KEY), not the key itself; export the key in that variable"
        )
    return name


def check_base_url(url: str | None) -> str | None:
    """A server URL without user, password or query string (where keys end up by mistake)."""
    if url is None:
        return url
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or parts.query:
        raise ValueError(
            "must not carry credentials or a query string (user:password@, ?key=...); put the API key in the "
            "environment variable named by api_key_env"
        )
    return url


def hides_value(field: str) -> bool:
    """Whether an error message about ``field`` (its last dotted part) must leave the given value out."""
    return bool(SECRET_FIELD.search(field))
