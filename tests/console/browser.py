"""Debian's chromium under Playwright for Python: one persistent context per test module.

Never a downloaded browser: ``executable_path=/usr/bin/chromium``; a fresh profile
directory; host names resolved to loopback by the browser itself (``MAP name 127.0.0.1``),
so nothing leaves the machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")


@contextmanager
def chromium(profile: Path, host_names: tuple[str, ...]) -> Iterator[object]:
    """A browser context whose ``host_names`` resolve to 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    rules = ", ".join(f"MAP {name} 127.0.0.1" for name in host_names)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=[*ARGS, f"--host-resolver-rules={rules}"],
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
