"""PING/PONG checks."""

from __future__ import annotations

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed
from accessfabric.wire import frames as fr


@check("ping", "ping.pong", "PING", "PONG with the same opaque value")
async def ping_pong(target: Target) -> str:
    async with target.session() as peer:
        peer.send(fr.Ping(0xFEEDFACECAFEBEEF).to_bytes())
        frame = await peer.expect_type(fr.Pong)
        if frame.opaque != 0xFEEDFACECAFEBEEF:
            raise CheckFailed(f"PONG carries {frame.opaque:#x}")
        return "PONG 0xfeedfacecafebeef"


@check("ping", "ping.many", "16 PINGs in one write", "16 PONGs, in order")
async def ping_many(target: Target) -> str:
    async with target.session() as peer:
        peer.pongs.clear()
        peer.send(*(fr.Ping(1000 + i).to_bytes() for i in range(16)))
        while len(peer.pongs) < 16:
            await peer.expect_type(fr.Pong)
        if peer.pongs != [1000 + i for i in range(16)]:
            raise CheckFailed(f"PONGs {peer.pongs}")
        return "16 PONGs in order"


@check("ping", "ping.unsolicited-pong", "a PONG nobody asked for", "ignored")
async def unsolicited_pong(target: Target) -> str:
    async with target.session() as peer:
        peer.send(fr.Pong(424242).to_bytes())
        await peer.expect_alive()
        return "ignored"
