"""The ``observer`` role (issue 17, ADR 0038): a real node runtime holding the role polls
the control plane (real HTTP on loopback) each heartbeat cycle and aggregates its
partition's per-node, per-class throughput and health into per-tenant totals, shown in
its ``accessfabric status``; it never sees another tenant's nodes, and a node without the
role is refused the feed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.control.client.client import ControlClient, ControlRefused
from accessfabric.control.client.facts import ClassBytes, RelayUsage
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.status import render
from accessfabric.node.config.node_config import ControlSettings, NodeConfig
from accessfabric.node.runtime import NodeRuntime
from tests.conditions import until
from tests.control.api_harness import Running, facts, running_plane

MiB = 1024 * 1024


async def _enrolled(
    cp: Running, tmp_path: Path, name: str, tenant: str, role: str
) -> ControlClient:
    client = cp.client(NodeKey.generate(), tmp_path / name)
    await client.__aenter__()
    await client.enroll(await cp.token(tenant, [role]))
    return client


def test_an_observer_aggregates_its_partition_and_only_its_partition(tmp_path: Path) -> None:
    asyncio.run(_observer_run(tmp_path))


async def _observer_run(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as cp:
        a1 = await _enrolled(cp, tmp_path, "a1", "acme", "mobile-edge")
        a2 = await _enrolled(cp, tmp_path, "a2", "acme", "mobile-edge")
        g1 = await _enrolled(cp, tmp_path, "g1", "globex", "mobile-edge")
        relay = await _enrolled(cp, tmp_path, "r1", "provider", "relay")
        clients = [a1, a2, g1, relay]
        observer = NodeRuntime(
            NodeConfig(
                key_path=tmp_path / "o.key", cert_dir=tmp_path / "o", roles=("observer",),
                authority_key=cp.authority.public_key, drain_timeout=0.2,
                control=ControlSettings(
                    url=cp.url, authority_key=cp.authority.public_key,
                    token=await cp.token("acme", ["observer"]), state_dir=tmp_path / "o.control",
                    heartbeat_interval=0.2,
                ),
            ),
            key=NodeKey.generate(),
        )  # fmt: skip
        try:
            bulk = lambda n: ClassBytes("bulk", n, n // 2)  # noqa: E731
            await a1.heartbeat(facts(class_bytes=(bulk(1 * MiB),), sessions=3))
            await a2.heartbeat(facts(class_bytes=(bulk(5 * MiB),), sessions=1))
            await g1.heartbeat(facts(class_bytes=(bulk(7 * MiB),)))
            usage = (
                RelayUsage("acme", "bulk", 2, 0, 300, 100),
                RelayUsage("globex", "bulk", 1, 0, 9, 9),
            )
            await relay.heartbeat(facts(relay_usage=usage))
            await observer.start()
            assert observer.control is not None
            seen = observer.control.observer
            await until(lambda: seen.polls >= 1 and len(seen.nodes) >= 3, timeout=15)

            def received(client: ControlClient) -> float:
                state = cp.plane.heartbeats.get(client.key.node_id)
                assert state is not None
                return state.received_at

            before = received(a1)
            await asyncio.sleep(0.3)
            await a1.heartbeat(facts(class_bytes=(bulk(9 * MiB),), sessions=3))  # +8 MiB in
            after = received(a1)
            view = lambda: seen.nodes.get(a1.key.node_id)  # noqa: E731
            await until(lambda: (v := view()) is not None and "bulk" in v.rates, timeout=15)
            rate_in, rate_out = seen.nodes[a1.key.node_id].rates["bulk"]
            assert rate_in == pytest.approx(8 * MiB / (after - before), rel=1e-3)
            assert rate_out == pytest.approx(4 * MiB / (after - before), rel=1e-3)

            status = observer.observe.status()["observer"]  # what `accessfabric status` shows
            (acme,) = status["tenants"]  # least knowledge: no globex, not even its relay bytes
            assert acme["tenant"] == "acme"
            assert acme["nodes"] == 3  # a1, a2 and the observer itself
            assert acme["sessions"] == 4 and acme["health"] == {"healthy": 3}
            assert acme["bytes"]["bulk"] == {"in": 14 * MiB, "out": 7 * MiB}
            assert acme["relayed_bytes"] == 400  # the shared relay's bytes for acme only
            assert acme["throughput_bps"]["bulk"]["in"] == pytest.approx(rate_in, abs=0.1)
            text = render({"observer": status})  # `accessfabric status` without --json
            assert "observer:" in text and "tenants:" in text and "acme" in text
            metrics = {  # and on the observer's /metrics
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in observer.observe.registry.collect()
                for sample in family.samples
                if sample.name.startswith("accessfabric_observer_")
            }
            assert (
                metrics[
                    ("accessfabric_observer_nodes", (("health", "healthy"), ("tenant", "acme")))
                ]
                == 3
            )
            assert metrics[("accessfabric_observer_relayed_bytes", (("tenant", "acme"),))] == 400
            inbound = (("class", "bulk"), ("direction", "in"), ("tenant", "acme"))
            name = "accessfabric_observer_throughput_bytes_per_second"
            assert metrics[(name, inbound)] == pytest.approx(rate_in, abs=0.1)
            assert not any(dict(labels).get("tenant") == "globex" for _, labels in metrics)
            busiest = status["busiest"][0]
            assert busiest["node_id"] == a1.key.node_id and busiest["health"] == "healthy"
            assert g1.key.node_id not in seen.nodes

            with pytest.raises(ControlRefused) as refused:  # not an observer: no feed
                await a2.telemetry()
            assert (refused.value.status, refused.value.code) == (403, "role_not_held")
        finally:
            await observer.shutdown()
            for client in clients:
                await client.__aexit__(None, None, None)


def test_rapid_telemetry_requests_cost_one_pass_per_partition(tmp_path: Path) -> None:
    """A looping observer is answered from the partition's view of the last ``ttl``
    seconds (control/server/telemetry.py ObserverViews), not a pass per request."""

    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            views = cp.plane.observer_views
            views.ttl = 60.0  # no expiry within the test, however loaded the machine
            a1 = await _enrolled(cp, tmp_path, "a1", "acme", "mobile-edge")
            o1 = await _enrolled(cp, tmp_path, "o1", "acme", "observer")
            o2 = await _enrolled(cp, tmp_path, "o2", "acme", "observer")
            g1 = await _enrolled(cp, tmp_path, "g1", "globex", "observer")
            try:
                await a1.heartbeat(facts(sessions=2))
                first = await o1.telemetry()
                for _ in range(20):
                    assert await o1.telemetry() == first
                assert await o2.telemetry() == first  # same partition: the same view
                assert views.builds == 1
                other = await g1.telemetry()  # another partition: its own pass
                assert views.builds == 2 and other["tenant"] == "globex"
                assert a1.key.node_id not in {n["node_id"] for n in other["nodes"]}
                views.ttl = 0.0  # expired: the next request takes a fresh view
                await a1.heartbeat(facts(sessions=5))
                fresh = await o1.telemetry()
                assert views.builds == 3
                (row,) = (n for n in fresh["nodes"] if n["node_id"] == a1.key.node_id)
                assert row["sessions"] == 5
            finally:
                for client in (a1, o1, o2, g1):
                    await client.__aexit__(None, None, None)

    asyncio.run(main())
