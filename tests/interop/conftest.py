"""One Go peer binary per test session, built from ``interop/go-peer``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.async_tests import run_async_test
from tests.interop.go_peer import build_go_peer


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_peer(tmp_path_factory.mktemp("go-peer"))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """``async def`` tests (the Go peer against in-process runtimes) in a fresh loop."""
    return run_async_test(pyfuncitem, 90.0)
