"""A real headless Chromium for page tests: Debian's ``chromium`` driven by Playwright.

Playwright downloads no browser here: it launches ``/usr/bin/chromium`` (``make install-test``
installs it with apt). The flags keep it off the network (this machine has none) and let it run as
root; each launch gets a fresh profile folder. Tests that need it skip with the reason when the
browser or Playwright is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Debian chromium is not installed (make install-test installs it with apt as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    return path


@dataclass
class PageLog:
    """What the page said while the test ran: console errors and uncaught exceptions."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.console_errors, *self.page_errors, *self.failed_requests]


@contextmanager
def chromium_page(profile_dir: Path, viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[Any, PageLog]]:
    """A Playwright page in a fresh headless Chromium, and the log of what went wrong on it."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: log.failed_requests.append(f"{r.url}: {r.failure}"))
            yield page, log
        finally:
            context.close()
