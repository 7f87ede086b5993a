"""Per-tenant quotas on a relay (an entry relays its devices' streams the same way), set
in ``[limits]``, attacked one bound at a time over real TCP on loopback (ADR 0038):

* ``max_relay_streams_per_tenant``: the stream beyond it is reset ``ENHANCE_YOUR_CALM``;
* ``relay_bytes_per_tenant``: the chunk that would pass it is not relayed, its stream is
  reset ``ENHANCE_YOUR_CALM``, and the tenant's next stream too, for the window;

while another tenant through the same relay and session is untouched, and each refusal
shows under its reason in the relay's status and ``/metrics``.  (Sessions per tenant:
tests/node/test_tenant_admission.py.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.errors import ErrorCode
from accessfabric.node.config.limits_config import admission_limits
from accessfabric.node.dialing.address import HostPort
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import build
from tests.relay.test_relay_accounting_loopback import labels, scrape, until_idle

KiB = 1024
QUOTA = 96 * KiB
INTERACTIVE = TrafficClass.INTERACTIVE


def test_the_quota_keys_load_from_the_config_table() -> None:
    limits = admission_limits(
        {"max_relay_streams_per_tenant": 2, "relay_bytes_per_tenant": QUOTA,
         "relay_bytes_window": 60}
    )  # fmt: skip
    relay = limits.relay()
    assert (relay.max_streams_per_tenant, relay.tenant_bytes_quota, relay.quota_window) == (
        2, QUOTA, 60.0,
    )  # fmt: skip
    assert AdmissionLimits().relay().tenant_bytes_quota == 0  # no byte quota by default
    with pytest.raises(ValueError, match="relay_bytes_per_tenant: expected an integer >= 0"):
        admission_limits({"relay_bytes_per_tenant": -1})


async def _echo(stream: object, payload: bytes) -> bytes:
    stream.write(payload)  # type: ignore[attr-defined]
    return await asyncio.wait_for(stream.readexactly(len(payload)), 10)  # type: ignore[attr-defined]


async def _reset_code(stream: object) -> ErrorCode | int:
    with pytest.raises(StreamResetError) as reset:
        while await asyncio.wait_for(stream.read(), 10):  # type: ignore[attr-defined]
            pass
    return reset.value.code


async def test_a_tenant_over_its_streams_is_refused_and_another_is_not(tmp_path: Path) -> None:
    fabric = await build(
        tmp_path, relays=1, relay_limits=AdmissionLimits(max_relay_streams_per_tenant=2)
    )
    try:
        src, relay = fabric.source, fabric.relays[0]
        await relay.observe.start(HostPort(host="127.0.0.1", port=0), None)
        (acme,) = fabric.routes([0], tenant="acme")
        (globex,) = fabric.routes([0], tenant="globex", first_id=2)

        async def open_on(route: LeasedRoute) -> object:
            src.routes.set_routes("echo", INTERACTIVE, [route])
            return await src.routes.open_stream("echo", INTERACTIVE)

        held = [await open_on(acme) for _ in range(2)]
        for stream in held:
            assert await _echo(stream, b"acme") == b"acme"
        over = await open_on(acme)  # the attack: a third stream of acme
        assert await _reset_code(over) == ErrorCode.ENHANCE_YOUR_CALM
        other = await open_on(globex)
        assert await _echo(other, b"globex") == b"globex"

        section = relay.observe.status()["relay"]
        assert section["refused"] == [{"tenant": "acme", "reason": "tenant_streams", "streams": 1}]
        samples = await scrape(relay.observe.metrics_url)
        row = ("accessfabric_relay_refused_total", labels(tenant="acme", reason="tenant_streams"))
        assert samples[row] == 1
        name = "accessfabric_relay_active_streams"
        active = {
            tenant: samples[(name, labels(tenant=tenant, cls="interactive"))]
            for tenant in ("acme", "globex")
        }
        assert active == {"acme": 2, "globex": 1}
        for stream in (*held, other):
            stream.close()  # type: ignore[attr-defined]
        await until_idle(relay)
        again = await open_on(acme)  # a closed stream gives its slot back
        assert await _echo(again, b"back") == b"back"
        again.close()  # type: ignore[attr-defined]
    finally:
        await fabric.stop()


async def test_a_tenant_over_its_relay_bytes_is_cut_and_refused(tmp_path: Path) -> None:
    fabric = await build(
        tmp_path, relays=1, relay_limits=AdmissionLimits(relay_bytes_per_tenant=QUOTA)
    )
    try:
        src, relay = fabric.source, fabric.relays[0]
        await relay.observe.start(HostPort(host="127.0.0.1", port=0), None)
        (acme,) = fabric.routes([0], tenant="acme")
        (globex,) = fabric.routes([0], tenant="globex", first_id=2)

        async def open_on(route: LeasedRoute) -> object:
            src.routes.set_routes("echo", INTERACTIVE, [route])
            return await src.routes.open_stream("echo", INTERACTIVE)

        first = await open_on(acme)
        small = os.urandom(16 * KiB)
        assert await _echo(first, small) == small  # 32 KiB relayed: within the quota
        first.write(os.urandom(64 * KiB))  # the attack: 128 KiB more would pass 96 KiB
        assert await _reset_code(first) == ErrorCode.ENHANCE_YOUR_CALM
        late = await open_on(acme)  # the window is spent: the next stream is refused
        assert await _reset_code(late) == ErrorCode.ENHANCE_YOUR_CALM
        other = await open_on(globex)
        assert await _echo(other, small) == small  # another tenant's own quota

        section = relay.observe.status()["relay"]
        quota = {row["tenant"]: row for row in section["quota"]}
        assert set(quota) == {"acme", "globex"}
        assert 2 * len(small) <= quota["acme"]["bytes"] <= QUOTA  # never past the quota
        assert quota["acme"]["quota"] == QUOTA and 0 < quota["acme"]["window_left_s"] <= 3600
        assert section["refused"] == [{"tenant": "acme", "reason": "tenant_bytes", "streams": 2}]
        relayed = sum(r["bytes_from_source"] + r["bytes_to_source"]
                      for r in section["relayed"] if r["tenant"] == "acme")  # fmt: skip
        assert relayed == quota["acme"]["bytes"]  # the accounting agrees with the quota
        samples = await scrape(relay.observe.metrics_url)
        assert (
            samples[("accessfabric_relay_quota_bytes", labels(tenant="acme"))]
            == (quota["acme"]["bytes"])
        )
        row = ("accessfabric_relay_refused_total", labels(tenant="acme", reason="tenant_bytes"))
        assert samples[row] == 2
        other.close()  # type: ignore[attr-defined]
        await until_idle(relay)
    finally:
        await fabric.stop()
