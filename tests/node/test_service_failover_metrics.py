"""A real leader-follower failover, counted on the nodes: ``accessfabric_service_failovers``.

An in-process control plane (replica TTL 2 s, route leases of 3 s) and three in-process
nodes: hosts ``a`` and ``b`` both serve ``db`` as leader-follower (``a`` registers first
and leads; ``b`` keeps a session to ``a``), and a source (placed on one of them, ADR 0027)
reaches ``db`` over route leases.  ``a`` shuts down; its replica
lease runs out, the control plane elects ``b`` under a higher epoch, ``b``'s control link
sees the new service lease (``leader_changed``) and the source's renewed route leases lead
to ``b`` instead of ``a`` (``destination_changed``).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.routing.service_failovers import MAX_OTHER_SERVICES, ServiceFailovers
from accessfabric.node.runtime import NodeRuntime
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import running_plane
from tests.echo_server import echo_server
from tests.node.test_control_link import _echo, _until, _write_config


def _failovers(node: NodeRuntime) -> dict[tuple[str, str], float]:
    text = generate_latest(node.observe.registry).decode()
    return {
        (sample.labels["service"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "accessfabric_service_failovers"
        for sample in family.samples
    }


async def test_leader_failover_is_counted_by_the_new_leader_and_the_source(
    tmp_path: Path,
) -> None:
    config = ControlConfig(heartbeat_interval=0.5, replica_ttl=2.0, route_lease_ttl=3.0)
    server = await echo_server()
    echo_port = server.sockets[0].getsockname()[1]
    service = (
        f'[[services]]\nname = "db"\ntarget = "127.0.0.1:{echo_port}"\nmode = "leader-follower"\n'
    )
    async with running_plane(tmp_path, config=config) as plane:
        hosts: dict[str, NodeRuntime] = {}
        source: NodeRuntime | None = None
        try:
            await plane.grant("acme", ["db"])  # default deny: the tenant's nodes may reach db
            for name in ("a", "b"):
                token = await plane.token("acme", ["entry", "service-host"])
                extra = service
                if name == "b":  # the source holds one session, to its placed entry (ADR
                    # 0027): placed on b, it reaches the leader a through b's session to a
                    a = hosts["a"]
                    extra += (
                        f'[[peers]]\nnode_id = "{a.node_id}"\n'
                        f'endpoints = ["{a.listeners[0].endpoint.url}"]\nconnect = "always"\n'
                    )
                node_config = load_node_config(_write_config(tmp_path, name, plane, token, extra))
                hosts[name] = NodeRuntime(node_config, components=(ServicesComponent(),))
                await hosts[name].start()

                async def leads(node_id: str = hosts["a"].node_id) -> bool:
                    _, body = await plane.admin("GET", "/v1/admin/services")
                    views = [v for v in body["services"] if v["service"] == "db"]
                    return bool(views) and views[0]["leader"] == node_id

                await _until(leads)  # a registered first: a leads, b follows
            token = await plane.token("acme", ["mobile-edge"])
            source = NodeRuntime(load_node_config(_write_config(tmp_path, "source", plane, token)))
            await source.start()

            async def opened() -> object:
                assert source is not None
                return await source.routes.open_stream("db", TrafficClass.RELIABLE)

            stream = await _until(opened, 20.0)
            await _echo(stream, b"served by the leader")
            stream.close()
            assert _failovers(hosts["b"]) == _failovers(source) == {}

            await hosts["a"].shutdown()  # no goodbye: a's replica lease must run out

            async def b_counted() -> bool:
                return _failovers(hosts["b"]) == {("db", "leader_changed"): 1.0}

            await _until(b_counted, 20.0)

            async def source_counted() -> bool:
                assert source is not None
                return _failovers(source) == {("db", "destination_changed"): 1.0}

            await _until(source_counted, 20.0)
            again = await _until(opened, 20.0)
            await _echo(again, b"served by the new leader")
            again.close()
        finally:
            if source is not None:
                await source.shutdown()
            for node in hosts.values():
                await node.shutdown()
            server.close()


def test_service_labels_stay_bounded() -> None:
    from accessfabric.control.kernel.objects import RouteLease

    failovers = ServiceFailovers(["db"])
    hop, first, second = (NodeKey.generate().node_id for _ in range(3))

    def lease(destination: str) -> RouteLease:
        return RouteLease(
            lease_id=bytes(16),
            route_id=1,
            epoch=1,
            hops=(hop, destination),
            tenant="acme",
            allowed_services=frozenset({"x"}),
            allowed_classes=frozenset({TrafficClass.RELIABLE}),
            issued_ms=0,
            expires_ms=1000,
            fencing_token=1,
        )

    for index in range(MAX_OTHER_SERVICES + 10):
        for destination in (first, second):
            failovers.route_leases(f"svc{index}", TrafficClass.RELIABLE, [lease(destination)])
    labels = {service for service, _ in failovers.counts}
    assert len(labels) == MAX_OTHER_SERVICES + 1 and "other" in labels
    assert failovers.counts[("other", "destination_changed")] == 10
    # The same replica again, or a set that still holds the old one, is no failover.
    failovers.route_leases("db", TrafficClass.RELIABLE, [lease(first)])
    failovers.route_leases("db", TrafficClass.RELIABLE, [lease(first), lease(second)])
    failovers.route_leases("db", TrafficClass.RELIABLE, [lease(first)])
    assert ("db", "destination_changed") not in failovers.counts
    failovers.route_leases("db", TrafficClass.RELIABLE, [lease(second)])  # first is gone
    assert failovers.counts[("db", "destination_changed")] == 1


def test_service_lease_changes() -> None:
    from accessfabric.control.kernel.objects import ServiceLease
    from accessfabric.control.kernel.vocabulary import ServiceMode

    a, b, c = (NodeKey.generate().node_id for _ in range(3))

    def held(replica: str, mode: ServiceMode, epoch: int) -> ServiceLease:
        return ServiceLease(
            service="web",
            replica=replica,
            mode=mode,
            epoch=epoch,
            issued_ms=0,
            expires_ms=1000,
            fencing_token=epoch,
        )

    failovers = ServiceFailovers(["web", "db"])
    aa = ServiceMode.ACTIVE_ACTIVE
    failovers.service_leases("web", [held(a, aa, 1), held(b, aa, 1), held(c, aa, 1)])
    failovers.service_leases("web", [held(a, aa, 1), held(b, aa, 1), held(c, aa, 1)])
    failovers.service_leases("web", [])  # none served for a moment: nothing to compare
    failovers.service_leases("web", [held(a, aa, 1)])  # b and c went away
    assert failovers.counts == {("web", "replica_lost"): 2}
    lf = ServiceMode.LEADER_FOLLOWER
    failovers.service_leases("db", [held(a, lf, 3)])
    failovers.service_leases("db", [held(a, lf, 3)])
    failovers.service_leases("db", [held(b, lf, 4)])
    assert failovers.counts[("db", "leader_changed")] == 1
