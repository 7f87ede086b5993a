"""Run ``async def`` tests of this package in a fresh asyncio loop with a deadline."""

from __future__ import annotations

import pytest

from tests.async_tests import run_async_test

TEST_DEADLINE = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return run_async_test(pyfuncitem, TEST_DEADLINE)
