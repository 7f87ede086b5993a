"""A QUIC fabric peer in its own process, for the migration test (one per namespace).

``python -m tests.carriers.quic_peer server --host H --cert-dir D --seed HEX``
    prints ``{"port": P, "node_id": ID}`` then, for every fabric stream, reads it to the
    end, answers the SHA-256 hex of what it read and prints
    ``{"received": N, "sha256": HEX, "peer": "addr:port"}`` (the client address the
    QUIC connection used last).  Runs until stdin closes.

``python -m tests.carriers.quic_peer client --host H --port P --expected ID --total N
[--local A] [--rebind-to B]``
    sends N deterministic bytes on one fabric stream; with ``--rebind-to`` it moves its
    QUIC connection to local address B after half of them; prints
    ``{"sent_sha256": HEX, "echo_sha256": HEX, "local_before": ..., "local_after": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from accessfabric.carriers.quic_config import QuicCarrierConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.quic_endpoints import connect_quic, serve_quic
from accessfabric.node.dialing.quic_pool import QuicConnectionPool
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.wire.registry import TrafficClass

PIECE = 64 * 1024


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def serve(args: argparse.Namespace) -> None:
    local = LocalNode(key=NodeKey.from_seed(bytes.fromhex(args.seed)), cert_dir=args.cert_dir)
    server_ref: list[object] = []

    async def handle(connection: SessionConnection) -> None:
        await connection.ready()
        while (stream := await connection.accept_stream()) is not None:
            digest = hashlib.sha256()
            received = 0
            while chunk := await stream.read(PIECE):
                digest.update(chunk)
                received += len(chunk)
            stream.write(digest.hexdigest().encode())
            stream.close()
            peers = [p.peer_address for p in server.protocols]  # type: ignore[attr-defined]
            peer = peers[0] if peers else None
            emit({"received": received, "sha256": digest.hexdigest(), "peer": list(peer or ())})

    tasks: set[asyncio.Task[None]] = set()

    def on_connection(connection: SessionConnection) -> None:
        task = asyncio.ensure_future(handle(connection))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve_quic(local, args.host, 0, on_connection)
    server_ref.append(server)
    emit({"port": server.port, "node_id": local.key.node_id})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


async def client(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalNode(key=NodeKey.generate(), cert_dir=Path(tmp))
        pool = QuicConnectionPool(QuicCarrierConfig(), local_host=args.local)
        connection = await connect_quic(
            local, args.host, args.port, expected_peer_id=args.expected, pool=pool
        )
        quic = pool.connection(args.host, args.port, args.expected)
        assert quic is not None
        before = quic.local_address
        stream = await connection.open_stream("sink", TrafficClass.BULK)
        digest = hashlib.sha256()
        sent = 0
        rebound = False
        started = time.perf_counter()
        counter = 0
        while sent < args.total:
            piece = hashlib.sha256(counter.to_bytes(8, "big")).digest() * (PIECE // 32)
            piece = piece[: args.total - sent]
            counter += 1
            digest.update(piece)
            stream.write(piece)
            await stream.drain()
            sent += len(piece)
            if args.rebind_to and not rebound and sent >= args.total // 2:
                await quic.rebind(args.rebind_to)
                rebound = True
        stream.close()
        echo = (await stream.read()).decode()
        seconds = time.perf_counter() - started
        emit(
            {
                "sent_sha256": digest.hexdigest(),
                "echo_sha256": echo,
                "local_before": list(before),
                "local_after": list(quic.local_address),
                "seconds": seconds,
                "mb_s": sent / seconds / 1e6,
            }
        )
        await connection.goaway()
        await asyncio.wait_for(connection.wait_closed(), 5)
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert-dir", type=Path)
    parser.add_argument("--seed", default="11" * 32)
    parser.add_argument("--expected")
    parser.add_argument("--total", type=int, default=8 << 20)
    parser.add_argument("--local")
    parser.add_argument("--rebind-to")
    args = parser.parse_args()
    asyncio.run(serve(args) if args.role == "server" else client(args))


if __name__ == "__main__":
    main()
