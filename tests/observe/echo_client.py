"""A fabric client in its own process (run inside a test namespace): echo N bytes, report.

``python -m tests.observe.echo_client --host H --port P --peer ID --total N --cert-dir D``
dials TCP+TLS, sends N bytes on one ``echo`` stream, reads them back, closes the session
and prints ``{"echoed": N, "segments_sent": ..., "retransmitted": ...}`` (its own TCP_INFO).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.wire.registry import TrafficClass

PIECE = 256 * 1024


async def main(args: argparse.Namespace) -> None:
    local = LocalNode(key=NodeKey.generate(), cert_dir=Path(args.cert_dir))
    connection = await connect_tcp(local, args.host, args.port, expected_peer_id=args.peer)
    stream = await connection.open_stream("echo", TrafficClass.BULK)

    async def read_back() -> int:
        got = 0
        while chunk := await stream.read(PIECE):
            got += len(chunk)
        return got

    reader = asyncio.create_task(read_back())
    piece = b"\x5a" * PIECE
    for _ in range(args.total // PIECE):
        stream.write(piece)
        await stream.drain()
    stream.close()
    echoed = await reader
    stats = connection.stats_probe.sample() if connection.stats_probe else None
    await connection.goaway()
    await asyncio.wait_for(connection.wait_closed(), 10)
    print(
        json.dumps(
            {
                "echoed": echoed,
                "segments_sent": stats.segments_sent if stats else None,
                "retransmitted": stats.segments_retransmitted if stats else None,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--cert-dir", required=True)
    asyncio.run(main(parser.parse_args()))
