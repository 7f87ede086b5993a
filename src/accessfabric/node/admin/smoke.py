"""``accessfabric smoke``: prove a node answers — handshake, two PINGs, one echo round trip.

Each way it can fail has its own exit code (:class:`SmokeExit`) and a one-line
message; :func:`classify_failure` is the mapping.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from accessfabric.errors import (
    AuthenticationError,
    ErrorCode,
    IdentityMismatchError,
    ProtocolError,
)
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import CarrierUnavailableError, dial
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.serving.services import ECHO_SERVICE
from accessfabric.node.streams.connection import SessionClosed, StreamResetError
from accessfabric.wire.registry import TrafficClass

ECHO_PAYLOAD_SIZE = 4096
PINGS = 2


class SmokeExit(IntEnum):
    """``accessfabric smoke`` exit codes (described in :data:`EXIT_CODE_MEANINGS`)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    TLS_FAILURE = 4
    IDENTITY_MISMATCH = 5
    AUTHENTICATION_FAILED = 6
    PROTOCOL_ERROR = 7
    ACCESS_DENIED = 8


EXIT_CODE_MEANINGS = {
    SmokeExit.OK: "the session came up, both PINGs and the echo round trip worked",
    SmokeExit.FAILED: "anything else (the echo came back wrong, an unexpected error)",
    SmokeExit.USAGE: "a user mistake: bad URL, bad node id, unreadable key file",
    SmokeExit.UNREACHABLE: "connection refused, no route, unknown host, or timed out",
    SmokeExit.TLS_FAILURE: "the TLS handshake failed (the endpoint does not speak TLS 1.3)",
    SmokeExit.IDENTITY_MISMATCH: "a node answered, but not the one --peer-id names",
    SmokeExit.AUTHENTICATION_FAILED: "AUTH did not verify (man in the middle, replay, bad peer)",
    SmokeExit.PROTOCOL_ERROR: "the peer broke the session protocol or is not a fabric node",
    SmokeExit.ACCESS_DENIED: "the node does not admit this key to echo (its access policy)",
}

EXIT_CODE_HELP = "\n".join(
    f"  {code.value}  {code.name.lower().replace('_', '-')}: {meaning}"
    for code, meaning in EXIT_CODE_MEANINGS.items()
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmokeResult:
    peer_node_id: str
    endpoint: Endpoint
    handshake: float
    ping_rtts: tuple[float, ...]
    echo_rtt: float
    echo_bytes: int

    def lines(self) -> list[str]:
        lines = [
            f"session up: peer {self.peer_node_id} via {self.endpoint.url} "
            f"(handshake {_ms(self.handshake)})"
        ]
        lines += [f"ping {i}: rtt {_ms(rtt)}" for i, rtt in enumerate(self.ping_rtts, 1)]
        lines.append(f"echo: {self.echo_bytes} bytes, round trip {_ms(self.echo_rtt)}")
        lines.append("ok")
        return lines


class EchoMismatchError(Exception):
    pass


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def run_smoke(
    endpoint: Endpoint, peer_id: str, key: NodeKey | None = None, *, timeout: float = 10.0
) -> SmokeResult:
    """Dial ``endpoint`` pinning ``peer_id``, ping twice, echo once, close.  Raises on failure."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_carrier_errors)
    with tempfile.TemporaryDirectory(prefix="accessfabric-smoke-") as cert_dir:
        local = LocalNode(key=key or NodeKey.generate(), cert_dir=Path(cert_dir))
        started = loop.time()
        connection = await dial(local, endpoint, expected_peer_id=peer_id, timeout=timeout)
        handshake = loop.time() - started
        try:
            rtts = [await asyncio.wait_for(connection.ping(), timeout) for _ in range(PINGS)]
            stream = await connection.open_stream(ECHO_SERVICE, TrafficClass.INTERACTIVE)
            payload = os.urandom(ECHO_PAYLOAD_SIZE)
            started = loop.time()
            stream.write(payload)
            await stream.drain()
            echoed = await asyncio.wait_for(stream.readexactly(len(payload)), timeout)
            echo_rtt = loop.time() - started
            if echoed != payload:
                raise EchoMismatchError("echo returned different bytes than were sent")
            stream.close()
            if await asyncio.wait_for(stream.read(), timeout):
                raise EchoMismatchError("echo returned more bytes than were sent")
            await connection.goaway(ErrorCode.NO_ERROR, "smoke done")
            await asyncio.wait_for(connection.wait_closed(), timeout)
        finally:
            connection.abort()
    assert connection.session.peer_node_id is not None
    return SmokeResult(
        peer_node_id=connection.session.peer_node_id,
        endpoint=endpoint,
        handshake=handshake,
        ping_rtts=tuple(rtts),
        echo_rtt=echo_rtt,
        echo_bytes=len(payload),
    )


def _quiet_carrier_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Keep errors the smoke result already reports out of stderr.

    A carrier that rejects the peer's TLS certificate raises inside asyncio's TLS
    callbacks, which asyncio also logs with a traceback; the same error reaches
    :func:`classify_failure`, which prints the one line the user needs.
    """
    quiet = ProtocolError | ssl.SSLError | ConnectionError | ConnectionClosed
    if isinstance(context.get("exception"), quiet):
        return
    loop.default_exception_handler(context)


def classify_failure(error: BaseException, endpoint: Endpoint) -> tuple[SmokeExit, str]:
    """The exit code and one-line message for an exception :func:`run_smoke` raised."""
    where = endpoint.url
    if isinstance(error, IdentityMismatchError):
        return SmokeExit.IDENTITY_MISMATCH, f"identity mismatch at {where}: {error}"
    if isinstance(error, AuthenticationError):
        return SmokeExit.AUTHENTICATION_FAILED, f"authentication failed at {where}: {error}"
    if isinstance(error, StreamResetError) and error.code == ErrorCode.ACCESS_DENIED:
        return (
            SmokeExit.ACCESS_DENIED,
            f"access denied at {where}: the node does not admit this key to {ECHO_SERVICE!r} "
            '(it needs [allow] echo with this node id or "*", or a grant)',
        )
    if isinstance(error, StreamResetError):
        return SmokeExit.PROTOCOL_ERROR, f"protocol error at {where}: echo {error}"
    if isinstance(error, ProtocolError):
        code = error.error_code.name
        return SmokeExit.PROTOCOL_ERROR, f"protocol error at {where}: {code}: {error}"
    if isinstance(error, SessionClosed):  # the carrier closed with no GOAWAY
        return (
            SmokeExit.PROTOCOL_ERROR,
            f"protocol error at {where}: the peer closed the connection without a fabric "
            f"handshake or GOAWAY ({error}); is it a fabric node?",
        )
    if isinstance(error, InvalidHandshake):
        return (
            SmokeExit.PROTOCOL_ERROR,
            f"protocol error at {where}: WebSocket upgrade failed ({error}); "
            "is it a fabric WebSocket endpoint?",
        )
    if isinstance(error, ConnectionClosed):
        return (
            SmokeExit.PROTOCOL_ERROR,
            f"protocol error at {where}: the peer closed the WebSocket without a fabric "
            "handshake; is it a fabric WebSocket endpoint?",
        )
    if isinstance(error, ssl.SSLError):
        reason = error.reason or error.strerror or str(error)
        return SmokeExit.TLS_FAILURE, f"TLS failure with {where}: {reason}"
    if isinstance(error, TimeoutError):
        return SmokeExit.UNREACHABLE, f"unreachable: {where}: timed out"
    if isinstance(error, CarrierUnavailableError):
        return SmokeExit.USAGE, f"{where}: {error}"
    if isinstance(error, OSError):
        if isinstance(error.errno, int) and error.errno > 0:
            reason = os.strerror(error.errno)
        else:
            reason = error.strerror or str(error) or type(error).__name__
        return SmokeExit.UNREACHABLE, f"unreachable: {where}: {reason}"
    if isinstance(error, EchoMismatchError):
        return SmokeExit.FAILED, f"echo check failed at {where}: {error}"
    return SmokeExit.FAILED, f"failed at {where}: {type(error).__name__}: {error}"
