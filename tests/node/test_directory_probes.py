"""Directory-peer probes (issue 13, "Also seen"): a node probes a directory peer so its RTT
reaches the route planner, but never one that holds a session with it already, and a peer
it cannot reach after exponential backoff with jitter, capped — not once per heartbeat.

Two in-process nodes on loopback: ``b`` dials ``a`` (a static peer), so ``a`` holds an
accepted session from ``b``; the directory ``a`` applies lists ``b`` and a third node at
endpoints nobody listens on.  Heartbeat cycles are simulated by applying the directory
once per (faked) second.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from pathlib import Path

from accessfabric.control.kernel.authority import Authority
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ControlSettings, NodeConfig, PeerConfig
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import SessionConnection
from tests.relay.fabric import LOOPBACK

CYCLES = 60
"""Simulated heartbeat cycles, one a second."""


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_probes_skip_peers_with_a_session_and_back_off(tmp_path: Path) -> None:
    authority = Authority(NodeKey.generate())
    settings = ControlSettings(
        url=f"http://127.0.0.1:{_closed_port()}",  # never answers: only the directory matters
        authority_key=authority.public_key,
        state_dir=tmp_path / "a.control",
    )
    a = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "a.key", cert_dir=tmp_path / "a", listen=(LOOPBACK,),
            authority_key=authority.public_key, control=settings, drain_timeout=0.5,
        ),
        key=NodeKey.generate(),
    )  # fmt: skip
    await a.start()
    b = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "b.key", cert_dir=tmp_path / "b",
            peers=(PeerConfig(node_id=a.node_id, endpoints=(a.listeners[0].endpoint,),
                              connect="always"),),
            drain_timeout=0.5,
        ),
        key=NodeKey.generate(),
    )  # fmt: skip
    await b.start()
    gone = NodeKey.generate().node_id  # in the directory, never running
    try:
        deadline = time.monotonic() + 10
        while not any(c.session.peer_node_id == b.node_id for c in a.observe.connections()):
            assert time.monotonic() < deadline, "b did not dial a"
            await asyncio.sleep(0.05)
        link = a.control
        assert link is not None

        dials: Counter[str] = Counter()
        session = a.peers.session

        async def counted(node_id: str) -> SessionConnection:
            dials[node_id] += 1
            return await session(node_id)

        a.peers.session = counted  # type: ignore[method-assign]
        now = [1_000_000.0]
        link._clock = lambda: now[0]
        directory = {
            "version": 1,
            "entries": [
                {"node_id": b.node_id, "endpoints": [f"tcp://127.0.0.1:{_closed_port()}"]},
                {"node_id": gone, "endpoints": [f"tcp://127.0.0.1:{_closed_port()}"]},
            ],
        }
        for _ in range(CYCLES):
            link._apply_directory(directory)
            probes = list(link._probes.values())
            if probes:
                await asyncio.wait(probes, timeout=10)
            now[0] += 1.0

        # b holds a session to a: its RTT is measured already, it is never dialled
        assert dials[b.node_id] == 0
        # the unreachable peer: backoff 1-2, 2-4, 4-8, 8-16, 16-32, 30-60 s ...
        assert 3 <= dials[gone] <= 7, dials
        before = dials[gone]
        for _ in range(CYCLES):  # the next minute: at most two more (the cap is 60 s)
            link._apply_directory(directory)
            probes = list(link._probes.values())
            if probes:
                await asyncio.wait(probes, timeout=10)
            now[0] += 1.0
        assert 1 <= dials[gone] - before <= 2, dials
    finally:
        await b.shutdown()
        await a.shutdown()
