"""Several in-process control replicas sharing one namespace of the session's etcd cluster."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.plane import ControlConfig, ControlPlane, bind_authority
from accessfabric.control.server.server import ControlServer
from accessfabric.control.server.store.etcd import EtcdStore
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import REQUEST_TIMEOUT, Running


@asynccontextmanager
async def running_replicas(
    endpoints_per_replica: Sequence[Sequence[str]],
    namespace: str,
    *,
    config: ControlConfig | None = None,
    before_start: Callable[[int, EtcdStore], None] | None = None,
) -> AsyncIterator[list[Running]]:
    """One replica per endpoint list, all with one authority and one admin credential
    (``before_start(index, store)``: called with each replica's store before it serves)."""
    authority = Authority(NodeKey.generate())
    async with AsyncExitStack() as stack:
        http = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
        stack.push_async_callback(http.close)
        replicas: list[Running] = []
        admin_token = ""
        for endpoints in endpoints_per_replica:
            store = EtcdStore(list(endpoints), namespace=namespace)
            stack.callback(store.close)
            bind_authority(store, authority)
            plane = ControlPlane(store, authority, config=config, clock=time.time)
            if not admin_token:
                admin_token = plane.admin.create()
            if before_start is not None:
                before_start(len(replicas), store)
            server = ControlServer(plane, "127.0.0.1", 0, tick_interval=0.05)
            await server.start()
            stack.push_async_callback(server.stop)
            replicas.append(Running(server, plane, admin_token, authority, http))
        yield replicas
