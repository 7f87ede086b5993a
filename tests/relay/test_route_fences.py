"""One route book per node: a ROUTE_UPDATE fences the route's older epochs for every part of
the node that takes route leases — route execution, the hop's lease check and the control
client's cached leases — and its newer lease replaces the old one for all of them (issue 15)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from accessfabric.bench.relay_lab import issue_route
from accessfabric.control.client.client import ControlClient
from accessfabric.control.client.node_cache import NodeCache
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason
from accessfabric.node.config.node_config import ControlSettings
from accessfabric.node.control_link import ControlLink
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.relay.fabric import build

ECHO = TrafficClass.INTERACTIVE


async def test_a_route_update_fences_every_lease_consumer_of_the_node(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=1)
    try:
        src, relay, dst = fabric.source, fabric.relays[0], fabric.destination
        hops = [src.node_id, relay.node_id, dst.node_id]
        old = issue_route(fabric.authority, 7, hops, epoch=1)
        newer = issue_route(fabric.authority, 7, hops, epoch=2)
        link = ControlLink(
            relay,
            ControlSettings(
                url="http://127.0.0.1:9",  # never asked: only the cache is read
                authority_key=fabric.authority.public_key,
                state_dir=tmp_path / "relay-control",
            ),
        )
        route_file = NodeCache.route_file("echo", ECHO.name.lower())
        link.client.cache.write(
            {"routes": [{"lease": base64.b64encode(old.blob).decode(), "rank": "primary"}]},
            *route_file,
        )

        def check_old() -> None:
            relay.data_plane.router.checker.check(
                old.blob, peer_id=src.node_id, service="echo", traffic_class=ECHO, route_id=7
            )

        # Before: epoch 1 is good for all three.
        check_old()
        assert not relay.routes.fenced(old.lease)
        assert [r.lease.epoch for r in link.client.cached_route_leases("echo", ECHO)] == [1]

        connection = await src.peers.session(relay.node_id)
        connection.session.send_route_update(newer.blob)
        connection.schedule_flush()
        await until(lambda: relay.routes.fenced(old.lease))

        assert relay.fences.epoch(7) == 2
        with pytest.raises(LeaseRejected) as refused:
            check_old()
        assert refused.value.reason is RejectReason.STALE_EPOCH
        # the one book holds the newer lease in the old one's place, for every reader
        assert link.client.routes is relay.routes.book
        assert [r.lease.epoch for r in link.client.cached_route_leases("echo", ECHO)] == [2]
        assert [r.lease.epoch for r in await relay.routes.routes("echo", ECHO)] == [2]
        # the disk cache holds the newer lease too: a node restarted from it while the
        # control plane is down (fresh book, no fences yet) uses epoch 2, not the old one
        restarted = ControlClient(
            "http://127.0.0.1:9", relay.key, fabric.authority.public_key,
            str(tmp_path / "relay-control"),
        )  # fmt: skip
        assert restarted.routes is not relay.routes.book
        assert [r.lease.epoch for r in restarted.cached_route_leases("echo", ECHO)] == [2]
        await restarted.close()

        # A fetch the control plane answered before it issued epoch 2, arriving after the
        # update: its epoch 1 is fenced, believed by no one, and not written to the cache.
        async def late_reply(method: str, path: str, document: Any = None, **_: Any) -> Any:
            return {"routes": [{"lease": base64.b64encode(old.blob).decode(), "rank": "primary"}]}

        link.client.request = late_reply  # type: ignore[method-assign]
        assert await link.client.fetch_route_leases("echo", ECHO) == []
        again = ControlClient(
            "http://127.0.0.1:9", relay.key, fabric.authority.public_key,
            str(tmp_path / "relay-control"),
        )  # fmt: skip
        assert [r.lease.epoch for r in again.cached_route_leases("echo", ECHO)] == [2]
        await again.close()
    finally:
        await fabric.stop()
