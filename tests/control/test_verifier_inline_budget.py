"""Signature checks on the loop (a route lease's first, issue 17) are bounded per window
of a loop turn: a flood of forged requests cannot make the control plane's loop verify
more than ``INLINE_PER_TURN`` signatures a window; the rest go to the verifier's threads
and are still checked, and no more than ``MAX_QUEUED`` wait there."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest

from accessfabric.control.server.api import verifier
from accessfabric.control.server.api.verifier import (
    INLINE_PER_TURN,
    INLINE_RESERVED,
    BatchVerifier,
    VerifierBusy,
)


def _record_checking_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check passes (b"sig" + key) and appends its thread's name to the
    list returned."""
    threads: list[str] = []

    def check(public_key: bytes, parts: Any, timestamp_ms: int) -> bytes:
        threads.append(threading.current_thread().name)
        return b"sig" + public_key

    monkeypatch.setattr(verifier, "check_signature", check)
    return threads


def test_inline_checks_beyond_a_turns_budget_go_to_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = _record_checking_threads(monkeypatch)

    async def main() -> None:
        batch = BatchVerifier(threads=2)
        try:
            keys = [bytes([i]) for i in range(INLINE_PER_TURN + 5)]
            flood = [batch.verify(key, cast(Any, None), 0, urgent=True) for key in keys]
            results = await asyncio.gather(*flood)  # all started in one turn
            assert results == [b"sig" + key for key in keys], "every one is still checked"
            loop_thread = threading.current_thread().name
            assert threads.count(loop_thread) == INLINE_PER_TURN
            assert batch.urgent_overflows == 5
            threads.clear()
            await batch.verify(b"x", cast(Any, None), 0, urgent=True)  # a later turn
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
    threads = _record_checking_threads(monkeypatch)

    async def main() -> None:
        batch = BatchVerifier(threads=2)
        loop_thread = threading.current_thread().name
        try:
            others = [bytes([i]) for i in range(INLINE_PER_TURN)]
            started = [batch.verify(key, cast(Any, None), 0) for key in others]
            leases = [bytes([100 + i]) for i in range(INLINE_RESERVED + 1)]
            started += [batch.verify(key, cast(Any, None), 0, urgent=True) for key in leases]
            results = await asyncio.gather(*started)  # all started in one turn
            assert results == [b"sig" + key for key in others + leases]
            on_loop = INLINE_PER_TURN - INLINE_RESERVED
            assert threads[:on_loop] == [loop_thread] * on_loop, "others: on the loop first"
            assert threads[on_loop : on_loop + INLINE_RESERVED] == [loop_thread] * INLINE_RESERVED
            assert threads.count(loop_thread) == INLINE_PER_TURN, "the rest: the threads"
            assert batch.inline_checks == INLINE_PER_TURN
            assert batch.urgent_overflows == 1
        finally:
            batch.close()

    asyncio.run(main())


def test_a_flood_beyond_what_waits_for_the_threads_is_refused_not_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checks the threads have not finished count against ``MAX_QUEUED``: beyond it a
    request is refused at once (the API answers 503), and once the threads catch up the
    verifier takes requests again."""
    release = threading.Event()

    def check(public_key: bytes, parts: Any, timestamp_ms: int) -> bytes:
        if threading.current_thread().name.startswith("verify"):
            release.wait(10)  # the threads are slow: their queue fills
        return b"sig" + public_key

    monkeypatch.setattr(verifier, "check_signature", check)
    monkeypatch.setattr(verifier, "MAX_QUEUED", 6)

    async def main() -> None:
        batch = BatchVerifier(threads=2)
        try:
            on_loop = INLINE_PER_TURN - INLINE_RESERVED  # then six for the threads
            keys = [bytes([i]) for i in range(on_loop + 6 + 1)]  # and one too many
            started = [asyncio.ensure_future(batch.verify(k, cast(Any, None), 0)) for k in keys]
            await asyncio.sleep(0)  # every one starts in this turn, one window
            assert isinstance(started[-1].exception(), VerifierBusy), "refused at once"
            release.set()
            results = await asyncio.gather(*started[:-1])
            assert results == [b"sig" + key for key in keys[:-1]], "those queued are checked"
            again = [bytes([200 + i]) for i in range(len(keys) - 1)]
            later = [batch.verify(key, cast(Any, None), 0) for key in again]
            assert len(await asyncio.gather(*later)) == len(again), "the queue drained"
        finally:
            release.set()
            batch.close()

    asyncio.run(main())
