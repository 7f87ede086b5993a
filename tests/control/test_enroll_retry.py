"""An enrollment whose reply was lost is retried without spending a second token use
(issue 17: the last devices of a fleet found their shared token used up)."""

from __future__ import annotations

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.registry import NodeRegistry
from accessfabric.control.server.store import SqliteStore
from accessfabric.control.server.tokens import TokenUsedUpError
from accessfabric.identity.keys import NodeKey
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
