"""Sealing keys learned from signed node records count only while the record is valid."""

from __future__ import annotations

import base64

from accessfabric.control.kernel.authority import Authority
from accessfabric.node.streams.stream_sealing import SealingKeys
from tests.control.objects_factory import (
    AUTHORITY,
    EXPIRES_MS,
    NODES,
    NOW,
    node_record,
)

EXPIRY = EXPIRES_MS / 1000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _keys(clock: Clock) -> SealingKeys:
    return SealingKeys(Authority(AUTHORITY).public_key, clock=clock)


def _record_blob() -> bytes:
    return Authority(AUTHORITY).issue(node_record())


def test_a_key_from_a_record_is_forgotten_when_the_record_expires() -> None:
    clock = Clock(NOW)
    keys = _keys(clock)
    assert keys.learn_record(_record_blob()) == NODES[0].node_id
    assert keys.get(NODES[0].node_id) == NODES[0].sealing_public_key_bytes
    clock.now = EXPIRY - 1
    assert keys.get(NODES[0].node_id) == NODES[0].sealing_public_key_bytes
    clock.now = EXPIRY
    assert keys.get(NODES[0].node_id) is None
    assert len(keys) == 0  # forgotten, not only hidden


def test_a_directory_entry_expires_like_a_record_and_a_configured_key_never() -> None:
    clock = Clock(NOW)
    keys = _keys(clock)
    entry = {"record": base64.b64encode(_record_blob()).decode()}
    assert keys.learn_directory({"entries": [entry]}) == 1
    keys.add(NODES[1].node_id, NODES[1].sealing_public_key_bytes)  # configuration
    clock.now = EXPIRY + 365 * 86400
    assert keys.get(NODES[0].node_id) is None
    assert keys.get(NODES[1].node_id) == NODES[1].sealing_public_key_bytes


def test_a_configured_key_replaces_a_learned_one_for_good() -> None:
    clock = Clock(NOW)
    keys = _keys(clock)
    keys.learn_record(_record_blob())
    keys.add(NODES[0].node_id, NODES[0].sealing_public_key_bytes)
    clock.now = EXPIRY + 1
    assert keys.get(NODES[0].node_id) == NODES[0].sealing_public_key_bytes


def test_a_record_learned_later_does_not_make_a_configured_key_expire() -> None:
    clock = Clock(NOW)
    keys = SealingKeys(
        Authority(AUTHORITY).public_key,
        {NODES[0].node_id: NODES[0].sealing_public_key_bytes},  # configuration
        clock=clock,
    )
    assert keys.learn_record(_record_blob()) == NODES[0].node_id  # e.g. from an opener
    clock.now = EXPIRY + 1
    assert keys.get(NODES[0].node_id) == NODES[0].sealing_public_key_bytes
