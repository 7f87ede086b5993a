"""``BatchVerifier``: request signatures checked in batches on a thread pool.

Ed25519 verification (~0.17 ms here) dominates a heartbeat, and ``cryptography`` releases
the GIL while it runs, so it can use the other CPUs.  Handing each check to a pool on its
own costs about as much as it saves; instead every signature queued during one turn of the
event loop goes out in at most ``threads`` chunks, and each chunk's results come back in
one callback.  A request a caller waits on at once (a route lease) may be checked
``inline`` on the loop instead, up to ``INLINE_PER_TURN`` per loop turn: a flood of
forged requests cannot make one turn of the loop do more than that much verifying (the
rest go to the batch, as before).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Future, ThreadPoolExecutor

from accessfabric.control.client.requestsig import RequestAuthError, SignedRequest, check_signature

_Item = tuple[bytes, SignedRequest, int]
INLINE_PER_TURN = 16
"""Signatures checked inline on the loop per loop turn (~3 ms); beyond, the batch."""
_Result = bytes | RequestAuthError


def _verify_chunk(items: list[_Item]) -> list[_Result]:
    results: list[_Result] = []
    for public_key, parts, timestamp_ms in items:
        try:
            results.append(check_signature(public_key, parts, timestamp_ms))
        except RequestAuthError as exc:
            results.append(exc)
    return results


class BatchVerifier:
    """``await verify(public_key, parts, timestamp_ms)`` -> the raw signature, or raises."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, "verify") if threads > 0 else None
        self._pending: list[tuple[_Item, asyncio.Future[bytes]]] = []
        self._scheduled = False
        self._inline_left = INLINE_PER_TURN
        self.inline_overflows = 0
        """Inline checks sent to the batch because a turn's inline budget was spent."""

    async def verify(
        self, public_key: bytes, parts: SignedRequest, timestamp_ms: int, *, inline: bool = False
    ) -> bytes:
        """The raw signature; ``inline``: checked now on the loop (~0.2 ms), not in the
        next batch: a batch's answer comes back one more loop turn later, and a turn of a
        control plane in a fleet's start-up is tens of milliseconds (issue 17); at most
        ``INLINE_PER_TURN`` per loop turn, the rest batched."""
        if self._pool is None:
            return check_signature(public_key, parts, timestamp_ms)
        loop = asyncio.get_running_loop()
        if inline:
            if self._inline_left == INLINE_PER_TURN:
                loop.call_soon(self._refill_inline)
            if self._inline_left > 0:
                self._inline_left -= 1
                return check_signature(public_key, parts, timestamp_ms)
            self.inline_overflows += 1
        future: asyncio.Future[bytes] = loop.create_future()
        self._pending.append(((public_key, parts, timestamp_ms), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await future

    def _refill_inline(self) -> None:
        self._inline_left = INLINE_PER_TURN

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        chunks = min(self._threads, len(batch))
        for index in range(chunks):
            chunk = batch[index::chunks]
            try:
                done = loop.run_in_executor(self._pool, _verify_chunk, [item for item, _ in chunk])
            except Exception as error:  # pool closed, no thread to start: fail, never hang
                for _, future in chunk:  # (an exception here used to leave them unresolved)
                    if not future.done():
                        future.set_exception(error)
                continue
            done.add_done_callback(functools.partial(_deliver, chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _deliver(
    chunk: list[tuple[_Item, asyncio.Future[bytes]]],
    done: asyncio.Future[list[_Result]] | Future[list[_Result]],
) -> None:
    error = None if done.cancelled() else done.exception()
    if done.cancelled() or error is not None:
        for _, future in chunk:
            if not future.done():
                future.set_exception(error or RuntimeError("verification cancelled"))
        return
    for (_, future), result in zip(chunk, done.result(), strict=True):
        if future.done():
            continue
        if isinstance(result, RequestAuthError):
            future.set_exception(result)
        else:
            future.set_result(result)
