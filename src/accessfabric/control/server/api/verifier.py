"""``BatchVerifier``: request signatures checked on the loop first, a turn's overflow in
batches on a thread pool.

Ed25519 verification (~0.17 ms here) dominates a heartbeat, and ``cryptography`` releases
the GIL while it runs, so it can use the other CPUs.  Handing each check to a pool on its
own costs about as much as it saves; instead every signature queued during one turn of the
event loop goes out in at most ``threads`` chunks, and each chunk's results come back in
one callback.

Every signature is first checked on the loop, up to ``INLINE_PER_TURN`` per window
(``INLINE_RESERVED`` of them kept for requests a caller waits on at once, ``urgent``: a
route lease); only a window's overflow goes to the threads.  A window starts with the
first check after a refill and ends when the refill it queued runs, one loop iteration
later, behind the callbacks already ready: so one iteration of the loop verifies at most
``2 * INLINE_PER_TURN - 1`` signatures (~6 ms), whatever a flood of forged requests
does.  At most ``MAX_QUEUED`` signatures wait for the threads; beyond, ``verify`` raises
:class:`VerifierBusy` (the API answers 503) instead of queueing work for requests that
may have timed out long before it is done.  Measured in a
1000-device start (issue 17, ADR 0056): handing a few signatures a turn to the threads
cost the loop more than checking them (``ThreadPoolExecutor.submit`` and taking the GIL
back from the threads after every socket write and every inline check: ~15 % of the
loop's busy samples, against ~0.2 ms a check).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Future, ThreadPoolExecutor

from accessfabric.control.client.requestsig import RequestAuthError, SignedRequest, check_signature

_Item = tuple[bytes, SignedRequest, int]
INLINE_PER_TURN = 16
"""Signatures checked on the loop per window (~3 ms; see above); beyond, the batch."""
INLINE_RESERVED = 4
"""Of ``INLINE_PER_TURN``, kept for ``urgent`` requests (a route lease): the others go to
the batch once fewer are left."""
MAX_QUEUED = 4096
"""Signatures waiting for (or on) the threads at most: ~0.4 s of two threads' work."""


class VerifierBusy(Exception):
    """``MAX_QUEUED`` signatures already wait for the threads: try again later."""


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
        self._queued = 0
        """Signatures handed to the batch whose results have not come back."""
        self.urgent_overflows = 0
        """``urgent`` checks sent to the batch because a window's budget was spent."""
        self.inline_checks = 0
        """Signatures checked on the loop."""

    async def verify(
        self, public_key: bytes, parts: SignedRequest, timestamp_ms: int, *, urgent: bool = False
    ) -> bytes:
        """The raw signature, checked now on the loop (~0.2 ms) while the window's budget
        lasts (``urgent``: a request a caller waits on, a route lease, may use its
        reserve), else in the next batch on the threads, one more loop turn later (a turn
        of a control plane in a fleet's start-up is tens of milliseconds, issue 17).
        Raises :class:`VerifierBusy` when ``MAX_QUEUED`` already wait for the threads."""
        if self._pool is None:
            return check_signature(public_key, parts, timestamp_ms)
        loop = asyncio.get_running_loop()
        if self._inline_left == INLINE_PER_TURN:
            loop.call_soon(self._refill_inline)
        if self._inline_left > (0 if urgent else INLINE_RESERVED):
            self._inline_left -= 1
            self.inline_checks += 1
            return check_signature(public_key, parts, timestamp_ms)
        if urgent:
            self.urgent_overflows += 1
        if self._queued >= MAX_QUEUED:
            raise VerifierBusy(f"{MAX_QUEUED} signatures are waiting to be checked")
        future: asyncio.Future[bytes] = loop.create_future()
        self._pending.append(((public_key, parts, timestamp_ms), future))
        self._queued += 1
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
                self._queued -= len(chunk)
                for _, future in chunk:  # (an exception here used to leave them unresolved)
                    if not future.done():
                        future.set_exception(error)
                continue
            done.add_done_callback(functools.partial(self._deliver, chunk))

    def _deliver(
        self,
        chunk: list[tuple[_Item, asyncio.Future[bytes]]],
        done: asyncio.Future[list[_Result]] | Future[list[_Result]],
    ) -> None:
        self._queued -= len(chunk)
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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
