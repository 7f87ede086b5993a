"""An in-process control plane on loopback for API and client tests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from accessfabric.control.client.client import ControlClient
from accessfabric.control.client.facts import HeartbeatFacts, PeerMeasurement, ServiceCapacity
from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.server import ControlServer
from accessfabric.control.server.store import SqliteStore
from accessfabric.control.server.store.base import Clock
from accessfabric.identity.keys import NodeKey

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)
"""A request the plane never answers fails the test in a minute with what the server's
connections and tasks were doing (:func:`answered`), not after pytest's 300 s timeout
(CI 09:17: an enrollment race hung; cause not found, ADR 0042)."""


def server_state(server: ControlServer) -> str:
    """What each connection of ``server`` is doing and where every task of the loop waits:
    a request that got no answer says whether its head arrived, is queued or is handled."""
    out = io.StringIO()
    low = server._runner.server
    for handler in low.connections if low is not None else []:
        waiter = handler._waiter
        print(
            f"connection peer={handler.peername} requests={handler._request_count} "
            f"queued={len(handler._messages)} "
            f"waiting_for_head={waiter is not None and not waiter.done()} "
            f"in_progress={handler._request_in_progress} "
            f"closing={handler._close or handler._force_close}",
            file=out,
        )
    for task in asyncio.all_tasks():
        print(f"task {task.get_name()} waits at:", " <- ".join(_await_chain(task)), file=out)
    return out.getvalue()


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """``function file:line`` of each coroutine ``task`` is awaiting, innermost last."""
    chain = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(chain) < 30:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            chain.append(repr(awaited)[:120])  # a future, or a generator-based awaitable
            break
        chain.append(f"{frame.f_code.co_name} {frame.f_code.co_filename}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return chain


@asynccontextmanager
async def answered(server: ControlServer) -> AsyncIterator[None]:
    """Fail with :func:`server_state` when the request inside times out (REQUEST_TIMEOUT)."""
    try:
        yield
    except TimeoutError as error:
        raise AssertionError(f"no answer from {server.url}:\n{server_state(server)}") from error


@dataclass
class Running:
    server: ControlServer
    plane: ControlPlane
    admin_token: str
    authority: Authority
    http: aiohttp.ClientSession
    signers: dict[str, RequestSigner] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    async def admin(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with (
            answered(self.server),
            self.http.request(method, self.url + path, json=document, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def token(self, tenant: str, roles: list[str], ttl: float = 3600, uses: int = 1) -> str:
        status, body = await self.admin(
            "POST",
            "/v1/admin/tokens",
            {"tenant": tenant, "roles": roles, "ttl_s": ttl, "uses": uses},
        )
        assert status == 201, body
        return str(body["token"])

    async def grant(self, tenant: str, services: list[str], roles: tuple[str, ...] = ()) -> str:
        """Admit ``tenant``'s nodes (with one of ``roles``, if any) to ``services``."""
        status, body = await self.admin(
            "POST",
            "/v1/admin/grants",
            {"tenant": tenant, "services": services, "roles": list(roles)},
        )
        assert status == 201, body
        return str(body["grant_id"])

    async def signed(
        self,
        key: NodeKey,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        signer: RequestSigner | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        if signer is None:
            signer = self.signers.get(key.node_id)
            if signer is None:
                signer = self.signers[key.node_id] = RequestSigner(key, clock=self.plane.clock)
        all_headers = signer.headers(method, path, body)
        all_headers.update(headers or {})
        async with (
            answered(self.server),
            self.http.request(method, self.url + path, data=body, headers=all_headers) as response,
        ):
            return response.status, json.loads(await response.read())

    def client(self, key: NodeKey, cache: Path) -> ControlClient:
        return ControlClient(
            self.url, key, self.authority.public_key, str(cache), clock=self.plane.clock
        )

    async def enroll_laptop_relay_host(
        self, cache: Path
    ) -> tuple[tuple[NodeKey, NodeKey, NodeKey], dict[str, ControlClient]]:
        """Enroll a laptop (mobile-edge), a relay (entry, relay) and a host (service-host) in
        acme: their keys, and their clients by name (caches under ``cache``)."""
        laptop, relay, host = (NodeKey.generate() for _ in range(3))
        clients = {}
        for name, key, roles in (
            ("laptop", laptop, ["mobile-edge"]),
            ("relay", relay, ["entry", "relay"]),
            ("host", host, ["service-host"]),
        ):
            clients[name] = self.client(key, cache / name)
            record = await clients[name].enroll(await self.token("acme", roles))
            assert record.node_id == key.node_id
        return (laptop, relay, host), clients


def enroll_body(key: NodeKey, token: str) -> bytes:
    return json.dumps(
        {
            "token": token,
            "public_key": base64.b64encode(key.public_key_bytes).decode(),
            "sealing_public_key": base64.b64encode(key.sealing_public_key_bytes).decode(),
        }
    ).encode()


def facts(
    *peers: tuple[NodeKey, float],
    region: str = "eu",
    domain: str = "",
    services: tuple[str, ...] = (),
    **fields: Any,
) -> HeartbeatFacts:
    return HeartbeatFacts(
        software_version="test",
        transports=("tcp_tls",),
        peers=tuple(PeerMeasurement(node_id=k.node_id, rtt_ms=rtt) for k, rtt in peers),
        services=tuple(ServiceCapacity(name=name, capacity=10) for name in services),
        region=region,
        failure_domain=domain,
        **fields,
    )


@asynccontextmanager
async def running_plane(
    tmp_path: Path,
    *,
    clock: Clock | None = None,
    config: ControlConfig | None = None,
    tick_interval: float = 0.05,
) -> AsyncIterator[Running]:
    import time

    now = clock or time.time
    authority = Authority(NodeKey.generate())
    store = SqliteStore(tmp_path / "control.db", clock=now)
    plane = ControlPlane(store, authority, config=config, clock=now)
    admin_token = plane.admin.create()
    server = ControlServer(plane, "127.0.0.1", 0, tick_interval=tick_interval)
    await server.start()
    http = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
    try:
        yield Running(server, plane, admin_token, authority, http)
    finally:
        await http.close()
        await server.stop()
        store.close()
