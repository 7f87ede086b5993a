"""The heartbeat table keeps measured peers packed (``PeerTable``, ADR 0038): the same
rows back, far fewer bytes, and the table's users see no difference."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from accessfabric.control.client import facts as facts_module
from accessfabric.control.client.facts import (
    HeartbeatFacts,
    PeerMeasurement,
    PeerTable,
    parse_facts,
    peer_ids,
)
from accessfabric.control.server.heartbeats import HeartbeatTable
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey

IDS = [NodeKey.generate().node_id for _ in range(9)]
ROWS = tuple(PeerMeasurement(IDS[i], 10.0 + i / 7) for i in range(8))
WIDE = (*ROWS[:3], PeerMeasurement(IDS[8], 3.25, jitter_ms=1.5, loss=0.01, queue_depth=4))


def deep_size(value: object) -> int:
    """Bytes of ``value`` and what it holds but the ids (shared with the registry)."""
    size = sys.getsizeof(value)
    if isinstance(value, tuple):  # the raw items, also of a PeerTable
        size += sum(deep_size(v) for v in tuple.__iter__(value) if not isinstance(v, str))
    return size


def test_a_table_is_its_rows() -> None:
    for rows in (ROWS, WIDE, ()):
        table = PeerTable(rows)
        assert table == rows and rows == table and list(table) == list(rows)
        assert len(table) == len(rows) and hash(table) == hash(rows)
        assert table[:2] == rows[:2] and peer_ids(table) == tuple(r.node_id for r in rows)
        if rows:
            assert table[-1] == rows[-1] and rows[0] in table
    assert PeerTable(ROWS) != PeerTable(WIDE)
    assert PeerTable.of(table := PeerTable(ROWS)) is table


def test_the_table_is_a_quarter_of_the_tuples() -> None:
    assert deep_size(PeerTable(ROWS)) * 4 <= deep_size(ROWS), (
        deep_size(PeerTable(ROWS)),
        deep_size(ROWS),
    )


def test_the_heartbeat_table_keeps_tables_and_sees_no_change_in_equal_facts(
    tmp_path: Path,
) -> None:
    heartbeats = HeartbeatTable(
        SqliteStore(tmp_path / "c.db", clock=lambda: 0.0), clock=lambda: 0.0
    )
    facts = parse_facts(HeartbeatFacts(peers=WIDE, region="eu").to_json())
    heartbeats.record("n1", facts, 0.0)
    state = heartbeats.get("n1")
    assert state is not None and isinstance(state.facts.peers, PeerTable)
    assert state.facts == facts and state.facts.to_json() == facts.to_json()
    cursor = heartbeats.changes.cursor()
    heartbeats.record("n1", replace(facts), 1.0)  # the same facts again: no directory change
    assert heartbeats.changes.since(cursor) == {}
    heartbeats.record("n1", replace(facts, peers=ROWS), 2.0)  # another set of peers: one
    assert list(heartbeats.changes.since(cursor) or {}) == ["n1"]


def test_peer_ids_are_shared_and_the_sharing_table_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal ids in two tables are one object, and heartbeats naming ever new ids (any
    enrolled node can send them) never grow the table past its bound."""
    monkeypatch.setattr(facts_module, "_SHARED_IDS", {})
    monkeypatch.setattr(facts_module, "_SHARED_IDS_LIMIT", 64)
    first = PeerTable(ROWS)
    copies = [PeerMeasurement(row.node_id.encode().decode(), row.rtt_ms) for row in ROWS]
    assert all(a.node_id is not b.node_id for a, b in zip(ROWS, copies, strict=True))
    second = PeerTable(copies)
    assert all(a is b for a, b in zip(first.ids(), second.ids(), strict=True))
    for batch in range(40):
        fresh = [PeerMeasurement(NodeKey.generate().node_id, 1.0) for _ in range(8)]
        assert list(PeerTable(fresh)) == fresh
        assert len(facts_module._SHARED_IDS) <= 64, batch
