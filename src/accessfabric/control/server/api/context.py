"""What every handler reaches through ``request.app``: the control plane and its helpers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from accessfabric.control.server.api.verifier import BatchVerifier
from accessfabric.control.server.plane import ControlPlane


@dataclass
class ApiContext:
    plane: ControlPlane
    verifier: BatchVerifier


CONTEXT = web.AppKey("accessfabric.control", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
