"""Run ``async def`` tests of this package in a fresh event loop with a deadline."""

from __future__ import annotations

import os

import pytest

from tests.async_tests import run_async_test

TEST_DEADLINE = 30.0
LOOP_ENV = "ACCESSFABRIC_TEST_LOOP"
"""``asyncio`` (default) or ``uvloop``: the loop the carrier tests run on."""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if os.environ.get(LOOP_ENV, "asyncio") == "uvloop":
        import uvloop

        return run_async_test(pyfuncitem, TEST_DEADLINE, uvloop.run)
    return run_async_test(pyfuncitem, TEST_DEADLINE)
