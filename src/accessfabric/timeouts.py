"""A deadline on one await that never loses its caller's cancellation (ADR 0067).

:func:`wait_within` is ``asyncio.wait_for`` for the places where a cancel must not be
lost.  On Python 3.11, ``wait_for`` cancelled in the loop step in which its inner future
completes returns the result instead of raising (CPython gh-86296, rewritten in 3.12): the
caller goes on as if never cancelled, and whoever cancelled it and waits for it may wait
for ever (ADR 0061: a control replica deaf to SIGTERM).

:func:`wait_within` runs the awaitable in the caller's own task under ``asyncio.timeout``,
so a cancel reaches the awaited future itself, or, when that future is already done, is
delivered at the task's next step (``Task.cancel`` sets ``_must_cancel``): it cannot be
lost.  Two more things 3.11's ``asyncio.timeout`` alone does not do are done here:

* its deadline raises ``TimeoutError`` also in a task cancelled once before that went on
  (cleanup after a cancel): 3.11's ``Timeout.__aexit__`` converts only when the task's
  cancel count falls to zero, so there it raised ``CancelledError`` for its own deadline
  (3.12 compares with the count at entry, as this does);
* a cancel of this task that something beneath swallowed (a nested 3.11 ``wait_for``) is
  raised when the awaitable returns: the task's cancel count rose while waiting and
  nothing took it back.  The result is then dropped, as a cancelled call's is.

Unlike ``wait_for``, a coroutine is not wrapped in a task of its own: it runs (and, on
a cancel or the deadline, ends) in the caller's task, so it is finished when this
returns or raises.  Python >= 3.11 (``Task.cancelling``, ``asyncio.timeout``).

:func:`cancel_and_wait` is the other half, for whoever stops tasks: cancel them and
wait, with a bound, without awaiting them.  ``task.cancel(); await task`` under
``suppress(CancelledError)`` waits for ever for a task that does not end, and a cancel
of the stopper itself while it waits is passed on to the awaited task and comes back as
that task's ``CancelledError``, which the ``suppress`` swallows: the stopper goes on as
if never cancelled (ADR 0061's replica that did not stop on SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

__all__ = ["STOP_WITHIN", "cancel_and_wait", "wait_within"]

STOP_WITHIN = 5.0
"""Seconds :func:`cancel_and_wait` waits for cancelled tasks to end."""

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def wait_within(awaitable: Awaitable[_T], timeout: float) -> _T:
    """``await awaitable``; ``TimeoutError`` after ``timeout`` seconds (it is cancelled
    then, as by ``asyncio.wait_for``); ``CancelledError`` whenever this task was
    cancelled meanwhile, even when the awaitable finished in the same loop step."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("wait_within needs a running task")
    before = task.cancelling()
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            result = await awaitable
    except asyncio.CancelledError:
        # 3.11: the deadline of a task cancelled before (count > 0 at entry) surfaces as
        # CancelledError; it is ours when no cancel was requested since the entry
        if scope.expired() and task.cancelling() <= before:
            raise TimeoutError from None
        raise
    if task.cancelling() > before:  # cancelled meanwhile, swallowed beneath
        raise asyncio.CancelledError
    return result


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], within: float = STOP_WITHIN
) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait up to ``within`` seconds for them to end; returns the
    ones that did not (logged).  Their results and errors are read and dropped.  The
    tasks are never awaited, so a cancel of the caller while it waits raises here."""
    me = asyncio.current_task()
    tasks = [task for task in tasks if task is not me]  # a stopper among them goes on
    for task in tasks:
        task.cancel()
    if not tasks:
        return set()
    done, left = await asyncio.wait(tasks, timeout=within)
    for task in done:
        if not task.cancelled():
            task.exception()  # read: no "exception was never retrieved" at exit
    if left:
        names = ", ".join(sorted(_name(task) for task in left))
        _log.error(
            "%d task(s) did not end within %g s of their cancel: %s", len(left), within, names
        )
    return left


def _name(task: asyncio.Future[Any]) -> str:
    if isinstance(task, asyncio.Task):
        coroutine = task.get_coro()
        return f"{task.get_name()} ({getattr(coroutine, '__qualname__', coroutine)})"
    return repr(task)
