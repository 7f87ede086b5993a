"""What a conformance check is, the target it runs against, and the registry of checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from accessfabric.conformance.peer import ScriptedPeer

CORE_GROUPS = ("handshake", "streams", "credit", "ping", "goaway")
GROUPS = (*CORE_GROUPS, "framing", "limits")


@dataclass(frozen=True, slots=True)
class Target:
    """The implementation under test: a TCP+TLS listener and the node id it must prove."""

    host: str
    port: int
    peer_id: str
    timeout: float = 5.0

    async def connect(self) -> ScriptedPeer:
        return await ScriptedPeer.connect(self.host, self.port, self.timeout)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[ScriptedPeer]:
        """A connected peer, no handshake yet; closed afterwards."""
        peer = await self.connect()
        try:
            yield peer
        finally:
            await peer.close()

    @asynccontextmanager
    async def session(self, **limits: int) -> AsyncIterator[ScriptedPeer]:
        """A peer after a correct handshake (``limits``: our SESSION_READY fields)."""
        async with self.connection() as peer:
            for name, value in limits.items():
                setattr(peer.limits, name, value)
            await peer.handshake(self.peer_id)
            yield peer


CheckBody = Callable[[Target], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of docs/protocol.md: ``body`` returns a detail or raises CheckFailed."""

    id: str
    group: str
    title: str
    expect: str
    body: CheckBody


CHECKS: list[Check] = []


def check(group: str, id: str, title: str, expect: str) -> Callable[[CheckBody], CheckBody]:
    """Register a check (ids are unique; the order of registration is the run order)."""
    assert group in GROUPS and all(c.id != id for c in CHECKS), id

    def register(body: CheckBody) -> CheckBody:
        CHECKS.append(Check(id, group, title, expect, body))
        return body

    return register
