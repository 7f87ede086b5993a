"""``wait_within`` (ADR 0067): a deadline on an await that never loses its caller's cancel.

The race is made in one loop step, deterministically: the awaited future completes and
the waiting task is cancelled before the loop runs again (as when a node's stop and a
reply arrive together).  On Python 3.11 ``asyncio.wait_for`` then returns the result and
the task goes on as if never cancelled (CPython gh-86296); ``wait_within`` raises.
Every scenario runs on asyncio's loop and on uvloop (the node's loop), when installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from accessfabric.timeouts import cancel_and_wait, wait_within

Waiter = Callable[[Awaitable[str], float], Awaitable[str]]


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def _run(loop: str, main: Coroutine[Any, Any, str]) -> str:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def _cancelled_as_the_future_completes(wait: Waiter) -> str:
    """A task waits on a future through ``wait``; the future gets its result and the task
    is cancelled in the same loop step.  What the task saw."""
    inner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait(inner, 10.0))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the task runs up to its wait
    inner.set_result("the result")
    task.cancel()
    await asyncio.wait({task}, timeout=5.0)
    assert task.done(), "the task did not end"
    return "cancelled" if task.cancelled() else f"returned {task.result()}"


async def _cancelled_as_the_coroutine_returns(wait: Waiter) -> str:
    """The same race with a coroutine: it cancels the waiting task as it returns (in
    ``wait_for`` it runs in a task of its own; in ``wait_within``, in the caller's)."""
    owner: list[asyncio.Task[str]] = []

    async def reply() -> str:
        await asyncio.sleep(0)
        owner[0].cancel()  # the stop lands in the step the reply arrives
        return "the result"

    async def waiting() -> str:
        result = await wait(reply(), 10.0)
        return f"{result}, and went on"

    task = asyncio.create_task(waiting())
    owner.append(task)
    await asyncio.wait({task}, timeout=5.0)
    assert task.done(), "the task did not end"
    return "cancelled" if task.cancelled() else f"returned {task.result()}"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="gh-86296 is fixed in 3.12")
@pytest.mark.parametrize("loop", _loops())
def test_wait_for_on_3_11_loses_a_cancel_that_lands_as_its_future_completes(loop: str) -> None:
    assert _run(loop, _cancelled_as_the_future_completes(asyncio.wait_for)) == (
        "returned the result"
    )
    assert _run(loop, _cancelled_as_the_coroutine_returns(asyncio.wait_for)) == (
        "returned the result, and went on"
    )


@pytest.mark.parametrize("loop", _loops())
def test_wait_within_raises_a_cancel_that_lands_as_its_future_completes(loop: str) -> None:
    assert _run(loop, _cancelled_as_the_future_completes(wait_within)) == "cancelled"
    assert _run(loop, _cancelled_as_the_coroutine_returns(wait_within)) == "cancelled"


@pytest.mark.parametrize("loop", _loops())
def test_wait_within_raises_a_cancel_a_nested_wait_for_swallowed(loop: str) -> None:
    """Code beneath that loses the cancel (a library's own 3.11 ``wait_for``) does not
    make ``wait_within`` lose it: the task's cancel count rose and nothing took it back."""

    async def nested(inner: Awaitable[str], timeout: float) -> str:
        return await wait_within(asyncio.wait_for(inner, timeout), timeout)

    assert _run(loop, _cancelled_as_the_coroutine_returns(nested)) == "cancelled"


@pytest.mark.parametrize("loop", _loops())
def test_wait_within_returns_the_result_and_times_out_like_wait_for(loop: str) -> None:
    async def main() -> str:
        assert await wait_within(asyncio.sleep(0, "soon"), 5.0) == "soon"
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("already")
        assert await wait_within(done, 5.0) == "already"
        ended: list[str] = []

        async def slow() -> str:
            try:
                await asyncio.Event().wait()
            finally:
                ended.append("cancelled by the deadline")
            return "never"

        with pytest.raises(TimeoutError):
            await wait_within(slow(), 0.01)
        assert ended == ["cancelled by the deadline"]  # finished before the raise
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await wait_within(pending, 0.01)
        assert pending.cancelled()
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0  # its own cancels undone
        return "ok"

    assert _run(loop, main()) == "ok"


@pytest.mark.parametrize("loop", _loops())
def test_a_cancel_and_the_deadline_together_raise_the_cancel(loop: str) -> None:
    async def main() -> str:
        task = asyncio.create_task(wait_within(asyncio.Event().wait(), 0.0))
        await asyncio.sleep(0)  # waiting; its deadline (now) runs in the next step
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
        return "cancelled" if task.cancelled() else repr(task.exception())

    assert _run(loop, main()) == "cancelled"


async def _deadline_after_a_cancel(wait: Waiter) -> str:
    """A task cancelled once goes on (its cleanup) and then waits with a deadline that
    expires: what that wait raised."""
    ready = asyncio.Event()

    async def cleanup_after_cancel() -> str:
        try:
            ready.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # e.g. a stop that closes things with bounded waits
        try:
            await wait(asyncio.Event().wait(), 0.01)  # type: ignore[arg-type]
        except TimeoutError:
            return "TimeoutError"
        except asyncio.CancelledError:
            return "CancelledError"
        return "nothing"

    task = asyncio.create_task(cleanup_after_cancel())
    await ready.wait()
    task.cancel()
    return await task


async def _plain_timeout(awaitable: Awaitable[str], timeout: float) -> str:
    async with asyncio.timeout(timeout):
        return await awaitable


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 counts from the entry")
def test_asyncio_timeout_on_3_11_raises_cancelled_for_its_own_deadline_after_a_cancel() -> None:
    """Why ``wait_within`` is more than ``asyncio.timeout``: on 3.11 its deadline, in a
    task whose earlier cancel was caught, raises ``CancelledError``, so a ``except
    TimeoutError`` around a bounded close in a stop path does not see it."""
    assert asyncio.run(_deadline_after_a_cancel(_plain_timeout)) == "CancelledError"


@pytest.mark.parametrize("loop", _loops())
def test_wait_within_raises_timeout_for_its_own_deadline_after_a_cancel(loop: str) -> None:
    assert _run(loop, _deadline_after_a_cancel(wait_within)) == "TimeoutError"
    assert _run(loop, _deadline_after_a_cancel(asyncio.wait_for)) == "TimeoutError"


# cancel_and_wait: a stopper's bounded wait that keeps its own cancel


async def _stubborn() -> None:
    """A task that takes one cancel as a request it does not follow (as a lost cancel)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)  # until the second cancel


async def _start_stubborn() -> asyncio.Task[None]:
    """A :func:`_stubborn` task that has reached its first await."""
    task = asyncio.create_task(_stubborn(), name="stubborn")
    await asyncio.sleep(0)
    return task


async def _end(*tasks: asyncio.Task[None]) -> None:
    """End stubborn tasks: their second cancel does."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=1.0)


def test_cancel_and_wait_ends_tasks_and_reads_their_errors() -> None:
    async def main() -> str:
        async def fails() -> None:
            raise ValueError("read, not logged")

        sleeper = asyncio.create_task(asyncio.sleep(3600))
        failed = asyncio.create_task(fails())
        await asyncio.sleep(0)
        assert await cancel_and_wait([sleeper, failed]) == set()
        assert sleeper.cancelled() and isinstance(failed.exception(), ValueError)
        assert await cancel_and_wait([]) == set()
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_cancel_and_wait_gives_up_on_a_task_that_does_not_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> str:
        stubborn = await _start_stubborn()
        left = await cancel_and_wait([stubborn], within=0.05)
        assert left == {stubborn} and not stubborn.done()
        await _end(stubborn)
        return "ok"

    assert asyncio.run(main()) == "ok"
    assert "1 task(s) did not end within 0.05 s" in caplog.text


def test_a_stopper_cancelled_while_it_waits_is_cancelled() -> None:
    """The old pattern, ``task.cancel(); await task`` under ``suppress(CancelledError)``,
    hands the stopper's own cancel to the awaited task and swallows it; ``cancel_and_wait``
    raises it."""

    async def old_stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def new_stop(task: asyncio.Task[None]) -> None:
        await cancel_and_wait([task], within=3600)

    async def stopper_outcome(stop: Callable[[asyncio.Task[None]], Awaitable[None]]) -> str:
        stubborn = await _start_stubborn()
        stopper = asyncio.create_task(stop(stubborn))
        await asyncio.sleep(0)  # the stopper cancelled the stubborn task and waits
        await asyncio.sleep(0)
        stopper.cancel()  # the stopper's own owner gives up on it
        await asyncio.wait([stopper], timeout=1.0)
        outcome = (
            "cancelled"
            if stopper.cancelled()
            else ("running" if not stopper.done() else "returned")
        )
        await _end(stubborn)
        await asyncio.wait([stopper], timeout=1.0)
        return outcome

    async def main() -> str:
        assert await stopper_outcome(old_stop) == "returned"  # swallowed: went on as if not
        return await stopper_outcome(new_stop)

    assert asyncio.run(main()) == "cancelled"


def test_a_stopper_among_its_tasks_is_not_cancelled_by_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> str:
        me = asyncio.current_task()
        assert me is not None
        other = asyncio.create_task(asyncio.sleep(3600), name="the other")
        assert await cancel_and_wait([me, other]) == set()
        assert other.cancelled() and me.cancelling() == 0
        stubborn = await _start_stubborn()
        await cancel_and_wait([stubborn], within=0.01)
        await _end(stubborn)
        return "went on"

    assert asyncio.run(main()) == "went on"
    assert "did not end within 0.01 s of their cancel: stubborn (_stubborn)" in caplog.text
