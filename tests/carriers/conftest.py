"""Run ``async def`` tests of this package in a fresh event loop with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import os

import pytest

TEST_DEADLINE = 30.0
LOOP_ENV = "ACCESSFABRIC_TEST_LOOP"
"""``asyncio`` (default) or ``uvloop``: the loop the carrier tests run on."""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def main() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_DEADLINE)

    if os.environ.get(LOOP_ENV, "asyncio") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    return True
