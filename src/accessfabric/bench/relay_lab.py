"""Pieces shared by the relay tests, the netns scenarios and ``bench relay``.

Static route leases signed by a test authority, the ``sealed-sink`` service (it hashes
the plaintext its node's data plane unsealed and answers with the SHA-256, which the
data plane seals), and the opener side that streams a deterministic payload through it,
sealing it itself with a :class:`SealInitiator` (the records a node's sealed stream
would write).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.identity.keys import NodeKey
from accessfabric.node.streams.connection import FabricStream
from accessfabric.sealing import SealInitiator
from accessfabric.sealing.handshake import stream_context
from accessfabric.sealing.records import CipherSuite
from accessfabric.wire.registry import TrafficClass

SEALED_SINK = "sealed-sink"
CHUNK = 256 * 1024


def issue_route(
    authority: Authority,
    route_id: int,
    hops: list[str],
    *,
    services: tuple[str, ...] = (SEALED_SINK, "echo"),
    classes: tuple[TrafficClass, ...] = tuple(TrafficClass),
    ttl: float = 3600.0,
    epoch: int = 1,
    tenant: str = "bench",
) -> LeasedRoute:
    now_ms = int(time.time() * 1000)
    lease = RouteLease(
        lease_id=secrets.token_bytes(16),
        route_id=route_id,
        epoch=epoch,
        hops=tuple(hops),
        tenant=tenant,
        allowed_services=frozenset(services),
        allowed_classes=frozenset(classes),
        issued_ms=now_ms - 1000,
        expires_ms=now_ms + int(ttl * 1000),
        fencing_token=route_id,
    )
    return LeasedRoute(lease, authority.issue(lease))


seal_context = stream_context  # the bench's name for it


def payload_chunk(index: int, size: int = CHUNK) -> bytes:
    """Deterministic, incompressible-looking payload chunk ``index``."""
    seed = hashlib.sha256(index.to_bytes(8, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class SinkResults:
    digests: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def sealed_sink(results: SinkResults) -> Callable[[FabricStream], Awaitable[None]]:
    """The destination's service: hash what arrives, answer with the SHA-256.

    The node's data plane unseals the stream before this handler sees it (and seals the
    reply); a stream that arrives unsealed through a relay never gets here.
    """

    async def serve(stream: FabricStream) -> None:
        digest = hashlib.sha256()
        size = 0
        while True:
            data = await stream.read(CHUNK)
            if not data:
                break
            digest.update(data)
            size += len(data)
        results.digests.append(digest.hexdigest())
        results.sizes.append(size)
        stream.write(digest.digest())
        stream.close()

    return serve


def new_initiator(
    key: NodeKey,
    destination_sealing_key: bytes,
    service: str,
    suite: CipherSuite = CipherSuite.CHACHA20_POLY1305,
) -> tuple[SealInitiator, bytes]:
    token = secrets.token_bytes(16)
    initiator = SealInitiator(
        key.sealing_private_key(),
        key.node_id,
        destination_sealing_key,
        seal_context(service, token),
        random_bytes=secrets.token_bytes,
        opened_ms=int(time.time() * 1000),
        suite=suite,
    )
    return initiator, token


async def send_sealed(
    stream: FabricStream,
    initiator: SealInitiator,
    total: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[str, str]:
    """Stream ``total`` payload bytes sealed; return (sha256 sent, sha256 the sink saw)."""
    digest = hashlib.sha256()
    sent = 0
    index = 0
    while sent < total:
        chunk = payload_chunk(index)[: total - sent]
        index += 1
        digest.update(chunk)
        stream.write(initiator.sealer.seal(chunk))
        await stream.drain()
        sent += len(chunk)
        if on_progress is not None:
            on_progress(sent)
    stream.write(initiator.sealer.finish())
    stream.close()
    reply = b""
    plain: list[bytes] = []
    while True:
        data = await stream.read()
        if not data:
            break
        reply += data
        plain += initiator.feed_reply(data)
    assert initiator.opener is not None, "no sealed reply"
    initiator.opener.check_end()
    return digest.hexdigest(), b"".join(plain).hex()
