"""Every API request is answered: a handler waiting on something that never comes is
stopped at the request deadline with 503 and the log names where it waited; a signature
check the verifier's pool cannot take fails at once (ADR 0042)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from accessfabric.control.client.requestsig import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestSigner,
    SignedRequest,
)
from accessfabric.control.server.api import deadline
from accessfabric.control.server.api.verifier import INLINE_PER_TURN, INLINE_RESERVED, BatchVerifier
from accessfabric.identity.keys import NodeKey
from accessfabric.observe.log_rate import RateLimitedLog
from tests.control.api_harness import enroll_body, running_plane


def test_a_request_that_never_gets_its_await_answered_is_503_and_logged_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(deadline, "REQUEST_DEADLINE", 0.5)
    monkeypatch.setattr(deadline, "_limited", RateLimitedLog(deadline._log))

    async def never(self: BatchVerifier, *args: object, **kwargs: object) -> bytes:
        await asyncio.get_running_loop().create_future()  # a future nobody resolves
        raise AssertionError("unreachable")

    monkeypatch.setattr(BatchVerifier, "verify", never)

    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            key = NodeKey.generate()
            token = await cp.token("acme", ["relay"])
            status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
            assert (status, reply["error"]["code"]) == (503, "deadline_exceeded"), reply
            status, _ = await cp.admin("GET", "/v1/admin/nodes")  # the server goes on
            assert status == 200

    with caplog.at_level(logging.ERROR, logger="accessfabric.control.server.api"):
        asyncio.run(asyncio.wait_for(main(), 30))
    (record,) = [r for r in caplog.records if r.getMessage() == "request deadline exceeded"]
    fields = record.fabric_fields  # type: ignore[attr-defined]
    assert fields["route"] == "/v1/enroll"
    assert "in never" in fields["waited_at"]  # the frame that waited
    assert "verify_signed" in fields["waited_at"]


def test_a_signature_check_the_pool_cannot_take_fails_instead_of_waiting_forever() -> None:
    """BatchVerifier hands checks to its threads from a loop callback; when the pool
    refuses the work (closed, or no thread can be started) the requests waiting on it
    must fail (answered 500), not wait forever with nothing to time them out.  (A turn's
    first checks run on the loop, ADR 0056: the ones beyond its budget go to the pool.)"""
    key = NodeKey.generate()
    signer = RequestSigner(key)
    headers = signer.headers("POST", "/v1/heartbeat", b"{}")
    parts = SignedRequest(
        method="POST", path="/v1/heartbeat", body=b"{}", node_id=key.node_id,
        timestamp=headers[TIMESTAMP_HEADER], signature=headers[SIGNATURE_HEADER], mac="",
    )  # fmt: skip

    async def main() -> None:
        verifier = BatchVerifier(2)
        signature = await verifier.verify(
            key.public_key_bytes, parts, int(headers[TIMESTAMP_HEADER])
        )
        assert signature
        verifier.close()
        on_loop = INLINE_PER_TURN - INLINE_RESERVED
        checks = [
            verifier.verify(key.public_key_bytes, parts, int(headers[TIMESTAMP_HEADER]))
            for _ in range(on_loop + 1)
        ]  # all in one turn
        results = await asyncio.wait_for(asyncio.gather(*checks, return_exceptions=True), 10)
        assert results[:on_loop] == [signature] * on_loop
        assert isinstance(results[-1], RuntimeError) and "shutdown" in str(results[-1])

    asyncio.run(main())
