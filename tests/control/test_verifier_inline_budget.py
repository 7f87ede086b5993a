"""Inline signature checks (a route lease's, issue 17) are bounded per loop turn: a flood
of forged lease requests cannot make one turn of the control plane's loop verify more than
``INLINE_PER_TURN`` signatures; the rest go to the verifier's threads, as every other
request's do, and are still checked."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest

from accessfabric.control.server.api import verifier
from accessfabric.control.server.api.verifier import INLINE_PER_TURN, INLINE_RESERVED, BatchVerifier


def test_inline_checks_beyond_a_turns_budget_go_to_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []

    def check(public_key: bytes, parts: Any, timestamp_ms: int) -> bytes:
        threads.append(threading.current_thread().name)
        return b"sig" + public_key

    monkeypatch.setattr(verifier, "check_signature", check)

    async def main() -> None:
        batch = BatchVerifier(threads=2)
        try:
            keys = [bytes([i]) for i in range(INLINE_PER_TURN + 5)]
            flood = [batch.verify(key, cast(Any, None), 0, inline=True) for key in keys]
            results = await asyncio.gather(*flood)  # all started in one turn
            assert results == [b"sig" + key for key in keys], "every one is still checked"
            loop_thread = threading.current_thread().name
            assert threads.count(loop_thread) == INLINE_PER_TURN
            assert batch.inline_overflows == 5
            threads.clear()
            await batch.verify(b"x", cast(Any, None), 0, inline=True)  # a later turn
            assert threads == [loop_thread], "the budget is back next turn"
        finally:
            batch.close()

    asyncio.run(main())


def test_other_signed_requests_are_checked_on_the_loop_leaving_the_leases_reserve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any signed request is checked on the loop while the turn's budget lasts (handing a
    few a turn to the threads cost the loop more, ADR 0056); ``INLINE_RESERVED`` of the
    budget stays for route leases, and the overflow goes to the threads."""
    threads: list[str] = []

    def check(public_key: bytes, parts: Any, timestamp_ms: int) -> bytes:
        threads.append(threading.current_thread().name)
        return b"sig" + public_key

    monkeypatch.setattr(verifier, "check_signature", check)

    async def main() -> None:
        batch = BatchVerifier(threads=2)
        loop_thread = threading.current_thread().name
        try:
            others = [bytes([i]) for i in range(INLINE_PER_TURN)]
            started = [batch.verify(key, cast(Any, None), 0) for key in others]
            leases = [bytes([100 + i]) for i in range(INLINE_RESERVED + 1)]
            started += [batch.verify(key, cast(Any, None), 0, inline=True) for key in leases]
            results = await asyncio.gather(*started)  # all started in one turn
            assert results == [b"sig" + key for key in others + leases]
            on_loop = INLINE_PER_TURN - INLINE_RESERVED
            assert threads[:on_loop] == [loop_thread] * on_loop, "others: on the loop first"
            assert threads[on_loop : on_loop + INLINE_RESERVED] == [loop_thread] * INLINE_RESERVED
            assert threads.count(loop_thread) == INLINE_PER_TURN, "the rest: the threads"
            assert batch.inline_checks == INLINE_PER_TURN
            assert batch.inline_overflows == 1
        finally:
            batch.close()

    asyncio.run(main())
