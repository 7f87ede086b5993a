"""A node shows its peers' ranked endpoint candidates in status and exports dial counters."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.runtime import NodeRuntime


async def test_status_lists_candidates_with_reasons_and_metrics_count_dials(
    tmp_path: Path,
) -> None:
    server = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "s.key",
            cert_dir=tmp_path / "s",
            listen=(Endpoint(carrier="tcp", host="127.0.0.1", port=0),),
        ),
        key=NodeKey.generate(),
    )
    await server.start()
    try:
        bound = server.listeners[0].endpoint
        dead = Endpoint(carrier="tcp", host="127.0.0.1", port=1)  # nothing listens there
        client = NodeRuntime(
            NodeConfig(
                key_path=tmp_path / "c.key",
                cert_dir=tmp_path / "c",
                peers=(PeerConfig(node_id=server.node_id, endpoints=(dead, bound)),),
            ),
            key=NodeKey.generate(),
        )
        await client.start()
        try:
            await client.peers.session(server.node_id)
            rows = client.observe.status()["endpoints"]
            assert [row["peer"] for row in rows] == [server.node_id, server.node_id]
            # The refused endpoint is demoted below the one that answered, and says why.
            assert rows[0]["address"].endswith(f":{bound.port}")
            assert rows[1]["in_backoff"] is True
            assert "backoff" in rows[1]["reasons"]
            metrics = generate_latest(client.observe.registry).decode()
            assert "accessfabric_dial_attempts_total 2.0" in metrics
            assert "accessfabric_dial_successes_total 1.0" in metrics
        finally:
            await client.shutdown()
    finally:
        await server.shutdown()
