"""Run an ``async def`` test in a fresh event loop with a deadline (the packages' conftests)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

Runner = Callable[[Coroutine[Any, Any, None]], None]


def run_async_test(
    pyfuncitem: pytest.Function, deadline: float, run: Runner = asyncio.run
) -> bool | None:
    """For ``pytest_pyfunc_call``: None for a plain test, else run it and return True."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def main() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), deadline)

    run(main())
    return True
