"""Every API request is answered: a handler waiting on something that never comes is
stopped at the request deadline with 503 and the log names where it waited (ADR 0042)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from accessfabric.control.server.api import deadline
from accessfabric.control.server.api.verifier import BatchVerifier
from accessfabric.identity.keys import NodeKey
from accessfabric.observe.log_rate import RateLimitedLog
from tests.control.api_harness import enroll_body, running_plane


def test_a_request_that_never_gets_its_await_answered_is_503_and_logged_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(deadline, "REQUEST_DEADLINE", 0.5)
    monkeypatch.setattr(deadline, "_limited", RateLimitedLog(deadline._log))

    async def never(self: BatchVerifier, *args: object) -> bytes:
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
