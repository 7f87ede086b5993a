"""What every handler reaches through ``request.app``: the control plane and its helpers."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from accessfabric.control.plane import ControlPlane


@dataclass
class ApiContext:
    plane: ControlPlane
    verify_pool: ThreadPoolExecutor | None
    """Ed25519 verification releases the GIL: a pool spreads it over the CPUs."""

    async def run_verify(self, function: object, *args: object) -> object:
        if self.verify_pool is None:
            return function(*args)  # type: ignore[operator]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.verify_pool, function, *args)  # type: ignore[arg-type]


CONTEXT = web.AppKey("accessfabric.control", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
