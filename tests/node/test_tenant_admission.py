"""Per-tenant session admission on an entry (issue 17): one tenant flooding the entry with
sessions is refused beyond its cap with GOAWAY ENHANCE_YOUR_CALM and a retry hint, and
cannot starve another tenant, whose sessions are admitted and keep working.  A real node
runtime on loopback TCP+TLS; the peers present authority-signed records of their tenant."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import NodeRecord
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.limits_config import admission_limits
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.node.serving.tenant_admission import REFUSAL, retry_hint, retry_hint_reason
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until

CAP = 4
FLOOD = 16


def signed_record(authority: Authority, key: NodeKey, tenant: str) -> bytes:
    now_ms = int(time.time() * 1000)
    record = NodeRecord(
        node_id=key.node_id,
        public_key=key.public_key_bytes,
        sealing_public_key=key.sealing_public_key_bytes,
        roles=frozenset({Role.MOBILE_EDGE}),
        tenant=tenant,
        organisation_scopes=frozenset(),
        trust_tier=1,
        issued_ms=now_ms - 1000,
        expires_ms=now_ms + 600_000,
        revision=1,
    )
    return authority.issue(record)


async def dial(tmp_path: Path, authority: Authority, tenant: str, port: int) -> SessionConnection:
    key = NodeKey.generate()
    blob = signed_record(authority, key, tenant)
    local = LocalNode(
        key=key, cert_dir=tmp_path / f"dev-{key.node_id[:12]}", node_record=lambda: blob
    )
    return await connect_tcp(local, "127.0.0.1", port)


def test_the_retry_hint_round_trips() -> None:
    assert retry_hint(retry_hint_reason("x", 5.25)) == 5.25
    assert retry_hint("too many refused streams") is None
    limits = admission_limits({"max_sessions_per_tenant": 10, "tenant_retry_after": 2})
    assert (limits.max_sessions_per_tenant, limits.tenant_retry_after) == (10, 2.0)


async def test_one_tenant_flooding_an_entry_cannot_starve_another(tmp_path: Path) -> None:
    authority = Authority(NodeKey.generate())
    config = NodeConfig(
        key_path=tmp_path / "entry.key",
        cert_dir=tmp_path / "entry",
        listen=(Endpoint(carrier="tcp", host="127.0.0.1", port=0),),
        roles=("entry",),
        authority_key=authority.public_key,
        limits=AdmissionLimits(max_sessions_per_tenant=CAP, tenant_retry_after=3.0),
        allow={"echo": ("*",)},
    )
    entry = NodeRuntime(config, key=NodeKey.generate())
    await entry.start()
    sessions: list[SessionConnection] = []
    try:
        port = entry.listeners[0].endpoint.port
        # Tenant "flood" opens FLOOD sessions at once (each its own node key).
        flood = await asyncio.gather(
            *(dial(tmp_path, authority, "flood", port) for _ in range(FLOOD))
        )
        sessions += flood
        await until(lambda: sum(not c.is_closed for c in flood) <= CAP, timeout=10)
        refused = [c for c in flood if c.is_closed]
        assert len(refused) == FLOOD - CAP
        for connection in refused:  # refused by GOAWAY ENHANCE_YOUR_CALM with a retry hint
            terminated = connection.session.terminated
            assert terminated is not None and terminated.remote
            assert terminated.error_code == ErrorCode.ENHANCE_YOUR_CALM
            assert REFUSAL in terminated.reason
            hint = retry_hint(terminated.reason)
            assert hint is not None and 3.0 <= hint <= 4.5
        tenants = entry.local.admission.tenants
        assert tenants.sessions("flood") == CAP
        assert tenants.refused == {"flood": FLOOD - CAP}

        # Tenant "quiet" still gets its sessions, and they carry streams.
        quiet = [await dial(tmp_path, authority, "quiet", port) for _ in range(CAP)]
        sessions += quiet
        for connection in quiet:
            stream = await connection.open_stream("echo", TrafficClass.INTERACTIVE)
            stream.write(b"ping")
            assert await asyncio.wait_for(stream.readexactly(4), 5) == b"ping"
            stream.close()
        assert not any(c.is_closed for c in quiet)
        assert tenants.sessions("quiet") == CAP

        # The flood retrying does not free a slot, closing one of its sessions does.
        again = await dial(tmp_path, authority, "flood", port)
        sessions.append(again)
        await until(lambda: again.is_closed, timeout=5)
        for c in flood:
            if not c.is_closed:
                c.abort()
                break
        await until(lambda: tenants.sessions("flood") == CAP - 1, timeout=5)
        admitted = await dial(tmp_path, authority, "flood", port)
        sessions.append(admitted)
        stream = await admitted.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"pong")
        assert await asyncio.wait_for(stream.readexactly(4), 5) == b"pong"
        assert entry.observe.status()["tenants"]["sessions"] == {"flood": CAP, "quiet": CAP}
        metrics = {  # accounted on /metrics too (ADR 0038)
            (sample.name, sample.labels.get("tenant")): sample.value
            for family in entry.observe.registry.collect()
            for sample in family.samples
            if sample.name.startswith("accessfabric_tenant_sessions")
        }
        assert metrics[("accessfabric_tenant_sessions", "flood")] == CAP
        assert metrics[("accessfabric_tenant_sessions", "quiet")] == CAP
        assert metrics[("accessfabric_tenant_sessions_refused_total", "flood")] == FLOOD - CAP + 1
    finally:
        for connection in sessions:
            connection.abort()
        await entry.shutdown("test over")
