"""A node's peer dialer in its own process, for the namespace fallback tests.

``python -m tests.node.fallback_dialer --peer ID --endpoints URL,URL --cert-dir D
[--timeout S] [--backoff S] [--interactive-quic W]``

Reads commands from stdin, one per line: ``dial bulk`` / ``dial interactive`` opens a
fresh session to the peer through :class:`RankedPeerDialer` (node-wide ranker kept
between commands), runs one ``echo`` round trip on it, closes it and prints one JSON
line: ``{"ok": true, "transport": ..., "kind": ..., "echo": true, "counters": ...}`` or
``{"ok": false, "error": ..., "type": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.address import parse_endpoint_url
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.peer_dialer import RankedPeerDialer, dial_metric_samples
from accessfabric.node.dialing.ranking import RankingPolicy, TransportWeights
from accessfabric.node.dialing.ranking.policy import INTERACTIVE_WEIGHTS
from accessfabric.wire.registry import TrafficClass

CLASSES = {"bulk": TrafficClass.BULK, "interactive": TrafficClass.INTERACTIVE}


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def main(args: argparse.Namespace) -> None:
    interactive: TransportWeights = dataclasses.replace(
        INTERACTIVE_WEIGHTS, direct_quic=args.interactive_quic
    )
    policy = RankingPolicy(
        interactive=interactive, backoff_base=args.backoff, backoff_max=args.backoff * 2
    )
    local = LocalNode(key=NodeKey.generate(), cert_dir=Path(args.cert_dir))
    dialer = RankedPeerDialer(local, policy=policy, timeout=args.timeout)
    endpoints = [parse_endpoint_url(url) for url in args.endpoints.split(",")]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"ready": True})
    while line := (await reader.readline()).decode().strip():
        _, _, name = line.partition(" ")
        traffic_class = CLASSES[name]
        try:
            connection, url = await dialer.open(args.peer, endpoints, traffic_class)
        except Exception as error:
            emit({"ok": False, "error": str(error), "type": type(error).__name__})
            continue
        stream = await connection.open_stream("echo", traffic_class)
        payload = b"fallback round trip " * 1000
        stream.write(payload)
        stream.close()
        echoed = await stream.readexactly(len(payload))
        connection.abort()
        samples = dial_metric_samples(dialer.counters)
        selected = {
            labels["transport"]: value
            for name, labels, value in samples
            if name.endswith("_selected_total")
        }
        emit(
            {
                "ok": True,
                "url": url,
                "kind": connection.info.kind,
                "echo": echoed == payload,
                "selected": selected,
                "ranked": [r.candidate.transport.value for r in dialer.rank(args.peer, endpoints)],
            }
        )
    await dialer.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True)
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--cert-dir", required=True)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--backoff", type=float, default=1.0)
    parser.add_argument("--interactive-quic", type=float, default=70.0)
    asyncio.run(main(parser.parse_args()))
