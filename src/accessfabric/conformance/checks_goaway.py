"""GOAWAY checks: graceful drain, error GOAWAY, an idle session ending."""

from __future__ import annotations

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed
from accessfabric.errors import ErrorCode
from accessfabric.wire import frames as fr


@check("goaway", "goaway.idle", "GOAWAY(NO_ERROR, 0) on a session with no stream",
       "the peer closes the connection (its GOAWAY, if any, is NO_ERROR)")  # fmt: skip
async def goaway_idle(target: Target) -> str:
    async with target.session() as peer:
        peer.send(fr.Goaway(0, ErrorCode.NO_ERROR, "conformance").to_bytes())
        theirs = await peer.expect_closed()
        if theirs is not None and theirs.error_code != ErrorCode.NO_ERROR:
            raise CheckFailed(f"the peer answered GOAWAY {theirs.error_code!r}")
        return "closed" + (" after its own GOAWAY NO_ERROR" if theirs else "")


@check("goaway", "goaway.drain", "GOAWAY(NO_ERROR) with an echo stream half done",
       "the stream finishes, then the peer closes the connection")  # fmt: skip
async def goaway_drain(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 0, b"before").to_bytes())
        await peer.settle(rounds=1)
        peer.send(fr.Goaway(0, ErrorCode.NO_ERROR, "draining").to_bytes())
        await peer.expect_alive()
        peer.send(fr.Data(1, 6, b" after", True).to_bytes())
        got = await peer.read_stream(1)
        if got.reset is not None or bytes(got.data) != b"before after":
            raise CheckFailed(f"the stream ended with {bytes(got.data)!r}, reset {got.reset}")
        theirs = await peer.expect_closed()
        if theirs is not None and theirs.error_code != ErrorCode.NO_ERROR:
            raise CheckFailed(f"the peer answered GOAWAY {theirs.error_code!r}")
        return "stream finished, then closed"


@check("goaway", "goaway.error", "GOAWAY(INTERNAL_ERROR) with an open stream",
       "the peer closes the connection at once, the stream unfinished")  # fmt: skip
async def goaway_error(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 0, b"unfinished").to_bytes())
        await peer.settle(rounds=1)
        peer.send(fr.Goaway(1, ErrorCode.INTERNAL_ERROR, "conformance").to_bytes())
        await peer.expect_closed()
        if peer.streams[1].ended:
            raise CheckFailed("the peer finished the stream after an error GOAWAY")
        return "closed"
