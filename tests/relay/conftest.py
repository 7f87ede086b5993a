"""Run ``async def`` relay tests in a fresh asyncio loop with a deadline."""

from __future__ import annotations

import asyncio
import inspect

import pytest

TEST_DEADLINE = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def main() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_DEADLINE)

    asyncio.run(main())
    return True
