"""Wait for a condition, never for a fixed time: the helper every async test uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Return as soon as ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"condition not reached in {timeout} s: {what}"
        await asyncio.sleep(0.005)


async def until_returns(
    check: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.1
) -> T:
    """Await ``check()`` until it returns something true (errors count as not yet); return
    it, or fail the test after ``timeout`` seconds naming the last error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        try:
            result = await check()
        except Exception as error:
            last = error
        else:
            if result:
                return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out; last error: {last!r}")
