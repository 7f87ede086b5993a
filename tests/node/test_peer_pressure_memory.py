"""A new session to a peer that reported pressure starts from its last levels (issue 22).

NODE_PRESSURE arrives on a session; a session replacing it (a TCP session redialled after a
network change, ADR 0045) used to start at bulk's full weight and uncapped until the peer's
next resend (up to 5 s).  ``DataPlane`` now remembers each peer node's last levels
(``PeerPressureMemory``: bounded, expiring) and a new session to that node starts from them.
"""

from __future__ import annotations

from accessfabric.node.dialing.endpoints import serve_tcp
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.serving.dataplane import DataPlane
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.node.streams.peer_pressure_memory import PeerPressureMemory
from accessfabric.session import SessionConfig
from tests.carriers.pairs import dial_tcp, port_of, serving, two_nodes
from tests.conditions import until


def test_memory_is_bounded_and_expires() -> None:
    memory = PeerPressureMemory(max_peers=2, ttl=10.0)
    memory.note("a", (0, 90, 0, 0), 0.0)
    memory.note("b", (0, 60, 0, 0), 1.0)
    memory.note("a", (0, 95, 0, 0), 2.0)  # a reported again: b is now the oldest
    memory.note("c", (0, 70, 0, 0), 3.0)
    assert len(memory) == 2
    assert memory.recall("b", 3.0) is None, "the least recently reported went first"
    assert memory.recall("a", 12.0) == (0, 95, 0, 0)
    assert memory.recall("a", 12.1) is None, "older than ttl: forgotten"
    assert len(memory) == 1
    assert memory.recall("unknown", 0.0) is None


async def test_a_new_session_to_a_pressured_peer_starts_from_its_last_levels() -> None:
    async with (
        two_nodes() as (dialer_node, acceptor_node),
        serving(
            serve_tcp,
            acceptor_node,
            0,
        ) as (server, accepted),
    ):
        peer = acceptor_node.key.node_id

        async def never(node_id: str) -> SessionConnection:
            raise AssertionError("not dialled here")

        plane = DataPlane(dialer_node.key.node_id, PeerSessionManager(never), None)
        try:
            first = await dial_tcp(dialer_node, port_of(server), peer)
            plane.attach(first)
            far = await accepted.next_ready()
            assert far.send_pressure(0, 95, 0, 0)
            await until(lambda: first.session.peer_pressure is not None, 10, "pressure arrives")
            first.abort()

            second = await dial_tcp(dialer_node, port_of(server), peer)
            plane.attach(second)
            # nothing said on this session yet: it starts from the first one's report
            assert second.session.peer_pressure == (0, 95, 0, 0)
            assert second.session.metrics().bulk_weight == SessionConfig().pressure_bulk_weight
            far2 = await accepted.next_ready()
            assert far2.send_pressure(0, 10, 0, 0)  # the peer's own word replaces it
            await until(
                lambda: (second.session.peer_pressure or (0, 100))[1] == 10, 10, "new report"
            )
            second.abort()
        finally:
            await plane.aclose()
