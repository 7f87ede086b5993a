"""An enrollment whose reply was lost is retried without spending a second token use
(issue 17: the last devices of a fleet found their shared token used up)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.registry import NodeRegistry
from accessfabric.control.server.store import SqliteStore
from accessfabric.control.server.tokens import TokenUsedUpError
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import enroll_body, running_plane
from tests.control.conftest import FakeClock


def test_a_retried_enrollment_spends_no_use(store: SqliteStore, clock: FakeClock) -> None:
    registry = NodeRegistry(store, Authority(NodeKey.generate()), clock=clock)
    token = registry.tokens.create("fleet", ["mobile-edge"], ttl=3600, uses=2).token
    first, second, third = (NodeKey.generate() for _ in range(3))

    node = registry.enroll(token, first.public_key_bytes, first.sealing_public_key_bytes)
    clock.advance(5)  # the reply was lost; the device asks again
    again = registry.enroll(token, first.public_key_bytes, first.sealing_public_key_bytes)
    assert again.blob == node.blob  # the same record, not a new revision
    # The second use is still there for the second device; then the token is used up.
    registry.enroll(token, second.public_key_bytes, second.sealing_public_key_bytes)
    with pytest.raises(TokenUsedUpError):
        registry.enroll(token, third.public_key_bytes, third.sealing_public_key_bytes)
    # Another sealing key is not a retry: it needs a use (there is none left).
    with pytest.raises(TokenUsedUpError):
        registry.enroll(token, first.public_key_bytes, third.sealing_public_key_bytes)


def test_a_node_enrolled_before_the_token_spends_a_use(
    store: SqliteStore, clock: FakeClock
) -> None:
    registry = NodeRegistry(store, Authority(NodeKey.generate()), clock=clock)
    key = NodeKey.generate()
    old = registry.tokens.create("fleet", ["mobile-edge"], ttl=3600).token
    registry.enroll(old, key.public_key_bytes, key.sealing_public_key_bytes)
    clock.advance(10)
    new = registry.tokens.create("fleet", ["mobile-edge"], ttl=3600).token
    node = registry.enroll(new, key.public_key_bytes, key.sealing_public_key_bytes)
    assert node.record.revision == 2  # re-enrolled: the new token's use is spent
    assert registry.tokens.peek(new).uses_left == 0


def test_a_retried_enrollment_is_one_event_on_the_timeline(tmp_path: Path) -> None:
    """The retry returns the stored record (nothing changed): ``node_enrolled`` once."""

    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            key, other = NodeKey.generate(), NodeKey.generate()
            token = await cp.token("fleet", ["mobile-edge"], uses=2)
            for _ in range(3):  # the first answer was lost; the device asks twice more
                status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
                assert status == 200, reply
            status, reply = await cp.signed(other, "POST", "/v1/enroll", enroll_body(other, token))
            assert status == 200, reply  # the retries spent no use: the second is still there
            enrolled = [e.subject for e in cp.plane.events.since() if e.kind == "node_enrolled"]
            assert enrolled == [key.node_id, other.node_id]

    asyncio.run(main())
