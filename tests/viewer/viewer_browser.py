"""Headless Chromium (Debian's build) driven by Playwright, with console errors, page errors and
dialogs recorded, for the viewer tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Watched:
    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def poll(self, expression: str, timeout: float = 10.0) -> None:
        """Wait until ``expression`` is truthy in the page (see :func:`poll`)."""
        poll(self.page, expression, timeout)

    def images_loaded(self) -> list[str]:
        """The src of every <img> on the page that has not loaded (empty when all did)."""
        return self.page.evaluate(
            """() => Array.from(document.images)
                 .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"""
        )


@contextmanager
def browser_page() -> Iterator[Watched]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Debian chromium is not installed (apt-get install chromium); .ci/run does it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            w = Watched(page)
            page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: w.errors.append(str(e)))

            def on_dialog(d: Any) -> None:
                w.dialogs.append(d.message)
                d.dismiss()

            page.on("dialog", on_dialog)
            page.on("request", lambda r: w.requests.append(r.url))
            yield w
        finally:
            browser.close()


def poll(page: Any, expression: str, timeout: float = 10.0) -> None:
    """Wait until ``expression`` is truthy in the page. (Playwright's ``wait_for_function``
    evaluates strings with eval, which the viewer's Content-Security-Policy forbids.)"""
    import time

    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)
