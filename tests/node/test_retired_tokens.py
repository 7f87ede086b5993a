"""Let-go resume tokens are forgotten when their time is up, whatever order they came in."""

from __future__ import annotations

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.serving import dataplane
from accessfabric.node.serving.dataplane import DataPlane


async def _no_dial(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("no dialling in this test")


def _plane() -> DataPlane:
    node_id = NodeKey.from_seed(bytes(32)).node_id
    return DataPlane(node_id, PeerSessionManager(_no_dial), None)  # type: ignore[arg-type]


def test_expired_tokens_behind_a_long_lived_one_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataplane, "RETIRED_LIMIT", 8)
    plane = _plane()
    plane._retired[b"long"] = 1000.0  # let go first, remembered until its lease ends
    for n in range(6):
        plane._retired[b"short%d" % n] = 10.0 + n
    plane._retired[b"fresh"] = 500.0
    plane.forget_retired(now=100.0)
    assert plane.retired_tokens == {b"long", b"fresh"}


def test_the_limit_evicts_the_oldest_only_when_that_many_still_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataplane, "RETIRED_LIMIT", 4)
    plane = _plane()
    for n in range(6):
        plane._retired[b"t%d" % n] = 1000.0
    plane.forget_retired(now=100.0)
    assert plane.retired_tokens == {b"t2", b"t3", b"t4", b"t5"}
