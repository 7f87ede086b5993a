"""A relay's accounting reaches its operator: source -> relay -> destination on loopback TCP.

A stream relayed for real shows on the relay's served ``/metrics`` (bytes per tenant,
class and direction) and in its status, asked over its admin socket by the real
``accessfabric status`` command (JSON and text); a stream the relay's quota refuses shows
under its reason.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.dialing.address import HostPort
from accessfabric.node.relaying.relay_limits import RelayLimits, RelayQuotas
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.wire.registry import TrafficClass
from tests.node.harness import COMMAND, command_env
from tests.relay.fabric import built

KiB = 1024
PAYLOAD = os.urandom(200 * KiB)
SEALING_SLACK = 4 * KiB  # sealed records, key exchange and final record around PAYLOAD
Labels = tuple[tuple[str, str], ...]


async def scrape(url: str, prefix: str = "accessfabric_relay_") -> dict[tuple[str, Labels], float]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix) and not sample.name.endswith("_created")
    }


def labels(*, cls: str = "", **names: str) -> Labels:
    """A sample's labels as :func:`scrape` keys them (``cls`` is the ``class`` label)."""
    if cls:
        names["class"] = cls
    return tuple(sorted(names.items()))


async def status_command(socket: Path, *flags: str) -> str:
    """``accessfabric status --socket SOCKET [flags]`` as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "status", "--socket", str(socket), *flags, env=command_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def until_idle(relay: NodeRuntime) -> None:
    """The relay's splice ends a moment after the source saw the end of its stream."""
    deadline = asyncio.get_running_loop().time() + 5
    while relay.data_plane.relay.active:
        assert asyncio.get_running_loop().time() < deadline, "the relay kept the splice"
        await asyncio.sleep(0.01)


async def test_relayed_bytes_show_on_metrics_and_status(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, relay, dst = fabric.source, fabric.relays[0], fabric.destination
        socket = tmp_path / "relay.sock"
        await relay.observe.start(HostPort(host="127.0.0.1", port=0), socket)
        assert "relay" not in relay.observe.status()  # no relay role, nothing relayed yet
        src.routes.set_routes("echo", TrafficClass.BULK, fabric.routes([0], tenant="acme"))
        stream = await src.routes.open_stream("echo", TrafficClass.BULK)
        stream.write(PAYLOAD)
        assert await asyncio.wait_for(stream.readexactly(len(PAYLOAD)), 10) == PAYLOAD
        stream.close()
        assert await asyncio.wait_for(stream.read(), 5) == b""
        await until_idle(relay)

        tenant = "acme"  # the tenant the route lease names
        bulk = labels(tenant=tenant, cls="bulk")
        samples = await scrape(relay.observe.metrics_url)
        relayed = "accessfabric_relay_bytes_total"
        up = samples.pop((relayed, labels(tenant=tenant, cls="bulk", direction="from_source")))
        down = samples.pop((relayed, labels(tenant=tenant, cls="bulk", direction="to_source")))
        assert len(PAYLOAD) <= up <= len(PAYLOAD) + SEALING_SLACK
        assert len(PAYLOAD) <= down <= len(PAYLOAD) + SEALING_SLACK
        assert samples == {  # one tenant, one class, nothing else
            ("accessfabric_relay_streams_total", bulk): 1,
            ("accessfabric_relay_active_streams", bulk): 0,
            ("accessfabric_relay_streams_gone_total", ()): 0,
            ("accessfabric_relay_callback_errors_total", ()): 0,
        }

        report = json.loads(await status_command(socket, "--json"))
        assert report["relay"] == {
            "active": 0,
            "gone": 0,
            "callback_errors": 0,
            "relayed": [
                {
                    "tenant": tenant,
                    "class": "bulk",
                    "streams": 1,
                    "active": 0,
                    "resumes": 0,
                    "bytes_from_source": up,
                    "bytes_to_source": down,
                },
            ],
            "refused": [],
        }
        text = await status_command(socket)
        section = [line.rstrip() for line in text.split("\nrelay:\n", 1)[1].splitlines()]
        assert section[:4] == [
            "  active           0",
            "  gone             0",
            "  callback_errors  0",
            "  relayed:",
        ]
        assert section[5].split() == [tenant, "bulk", "1", "0", "0", str(int(up)), str(int(down))]
        assert "relay" not in dst.observe.status() and "relay" not in src.observe.status()


async def test_a_stream_the_relay_quota_refuses_shows_under_its_reason(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, relay = fabric.source, fabric.relays[0]
        relay.data_plane.relay.quotas = RelayQuotas(RelayLimits(max_streams_per_tenant=1))
        await relay.observe.start(HostPort(host="127.0.0.1", port=0), None)
        (route,) = fabric.routes([0], tenant="acme")
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
        first = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        first.write(b"ping")
        assert await asyncio.wait_for(first.readexactly(4), 5) == b"ping"
        connection = await src.peers.session(route.first_hop)  # a second, over the quota
        second = await connection.open_stream(
            "echo", TrafficClass.INTERACTIVE, route.route_id, route_lease=route.blob
        )
        with pytest.raises(StreamResetError) as reset:
            await asyncio.wait_for(second.read(), 5)
        assert reset.value.code == ErrorCode.ENHANCE_YOUR_CALM  # a tenant quota (ADR 0038)

        tenant = "acme"
        samples = await scrape(relay.observe.metrics_url, "accessfabric_relay_refused")
        assert samples == {
            ("accessfabric_relay_refused_total", labels(tenant=tenant, reason="tenant_streams")): 1
        }
        active = await scrape(relay.observe.metrics_url, "accessfabric_relay_active_streams")
        assert active == {
            ("accessfabric_relay_active_streams", labels(tenant=tenant, cls="interactive")): 1
        }
        section = relay.observe.status()["relay"]
        assert section["refused"] == [{"tenant": tenant, "reason": "tenant_streams", "streams": 1}]
        assert section["active"] == 1
        first.close()
        assert await asyncio.wait_for(first.read(), 5) == b""


async def test_each_tenant_behind_one_upstream_has_its_own_quota(tmp_path: Path) -> None:
    """Two tenants' leases over the same source -> relay session: the relay limits and
    accounts each by the tenant its lease names, not by the peer that brought the stream."""
    async with built(tmp_path, relays=1) as fabric:
        src, relay = fabric.source, fabric.relays[0]
        relay.data_plane.relay.quotas = RelayQuotas(RelayLimits(max_streams_per_tenant=1))
        await relay.observe.start(HostPort(host="127.0.0.1", port=0), None)
        (acme,) = fabric.routes([0], tenant="acme")
        (globex,) = fabric.routes([0], tenant="globex", first_id=2)
        interactive = TrafficClass.INTERACTIVE

        src.routes.set_routes("echo", interactive, [acme])
        acme_first = await src.routes.open_stream("echo", interactive)
        acme_first.write(b"acme")
        assert await asyncio.wait_for(acme_first.readexactly(4), 5) == b"acme"

        connection = await src.peers.session(relay.node_id)  # one session carries both
        acme_second = await connection.open_stream(
            "echo", interactive, acme.route_id, route_lease=acme.blob
        )
        with pytest.raises(StreamResetError) as reset:
            await asyncio.wait_for(acme_second.read(), 5)
        assert reset.value.code == ErrorCode.ENHANCE_YOUR_CALM

        src.routes.set_routes("echo", interactive, [globex])
        globex_first = await src.routes.open_stream("echo", interactive)
        globex_first.write(b"globex")
        assert await asyncio.wait_for(globex_first.readexactly(6), 5) == b"globex"
        assert src.peers.counters().active == 1  # still the one session to the relay

        samples = await scrape(relay.observe.metrics_url)
        for tenant in ("acme", "globex"):
            row = labels(tenant=tenant, cls="interactive")
            assert samples[("accessfabric_relay_streams_total", row)] == 1
            assert samples[("accessfabric_relay_active_streams", row)] == 1
            up = labels(tenant=tenant, cls="interactive", direction="from_source")
            assert samples[("accessfabric_relay_bytes_total", up)] > 0
        refused = {key: n for key, n in samples.items() if key[0].endswith("refused_total")}
        assert refused == {
            ("accessfabric_relay_refused_total", labels(tenant="acme", reason="tenant_streams")): 1
        }
        section = relay.observe.status()["relay"]
        assert [(r["tenant"], r["active"]) for r in section["relayed"]] == [
            ("acme", 1),
            ("globex", 1),
        ]
        for stream in (acme_first, globex_first):
            stream.close()
            assert await asyncio.wait_for(stream.read(), 5) == b""
        await until_idle(relay)


async def test_a_claim_failing_after_admission_gives_the_quota_slot_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relay_stream`` raising once the quota admitted the stream: the stream is reset,
    the error counted, and the tenant's only slot is free for the next stream."""
    async with built(tmp_path, relays=1) as fabric:
        src, relay = fabric.source, fabric.relays[0]
        splicer = relay.data_plane.relay
        splicer.quotas = RelayQuotas(RelayLimits(max_streams_per_tenant=1))
        (route,) = fabric.routes([0], tenant="acme")
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
        claim = splicer.open
        failed_claims = []

        def open_failing_once(connection: Any, *args: Any) -> None:
            # Sessions are slotted (ADR 0044): the method is replaced on the class, for the
            # length of this synchronous claim, and refuses for this connection's session only.
            session_class = type(connection.session)
            relay_stream = session_class.relay_stream

            def refuse(session: Any, stream_id: int) -> None:
                if session is not connection.session:
                    return relay_stream(session, stream_id)
                raise LocalProtocolError(f"stream {stream_id}: injected")

            if failed_claims:
                return claim(connection, *args)
            failed_claims.append(connection)
            with monkeypatch.context() as patch:
                patch.setattr(session_class, "relay_stream", refuse)
                claim(connection, *args)

        monkeypatch.setattr(splicer, "open", open_failing_once)
        connection = await src.peers.session(route.first_hop)
        failed = await connection.open_stream(
            "echo", TrafficClass.INTERACTIVE, route.route_id, route_lease=route.blob
        )
        with pytest.raises(StreamResetError) as reset:
            await asyncio.wait_for(failed.read(), 5)
        assert reset.value.code == ErrorCode.ROUTE_REJECTED
        assert splicer.callback_errors == 1
        assert splicer.active == 0
        assert splicer.quotas.usage[("acme", TrafficClass.INTERACTIVE)].active == 0

        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"ping")
        assert await asyncio.wait_for(stream.readexactly(4), 5) == b"ping"
        assert splicer.quotas.refused == {} and len(failed_claims) == 1
        stream.close()
        assert await asyncio.wait_for(stream.read(), 5) == b""
        await until_idle(relay)
