"""Endpoint ranking reflects measured carrier throughput (issue 18).

A QUIC endpoint that moves a tenth of what TCP+TLS moves is not preferred for bulk,
even when the configured transport weights would prefer it; interactive classes are
not affected; without measurements of both nothing changes.  The meter records the
busiest window of a real dialed session (TCP+TLS on loopback).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.ranking import (
    EndpointCandidate,
    EndpointRanker,
    RankingPolicy,
    Transport,
)
from accessfabric.node.dialing.ranking.policy import BULK_WEIGHTS
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream
from accessfabric.wire.registry import TrafficClass

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)
QUIC = EndpointCandidate(transport=Transport.DIRECT_QUIC, address="quic://192.0.2.1:7443")
TCP = EndpointCandidate(transport=Transport.TCP_TLS, address="tcp://192.0.2.1:7443")


def _quic_first_policy() -> RankingPolicy:
    bulk = dataclasses.replace(BULK_WEIGHTS, direct_quic=55.0)
    return RankingPolicy(bulk=bulk)


def test_tenth_of_tcp_is_not_preferred_for_bulk() -> None:
    ranker = EndpointRanker(_quic_first_policy())
    assert ranker.rank([QUIC, TCP], 0.0, TrafficClass.BULK)[0].candidate == QUIC
    ranker.record_throughput(Transport.DIRECT_QUIC, 45e6, 1.0)
    ranker.record_throughput(Transport.TCP_TLS, 450e6, 1.0)
    bulk = ranker.rank([QUIC, TCP], 2.0, TrafficClass.BULK)
    assert bulk[0].candidate == TCP
    reason = next(r for r in bulk[1].reasons if r.factor == "throughput")
    assert reason.contribution == -20.0 and "45.0 MB/s" in reason.explanation
    whole = ranker.rank([QUIC, TCP], 2.0, None)
    assert whole[0].candidate == TCP
    interactive = ranker.rank([QUIC, TCP], 2.0, TrafficClass.INTERACTIVE)
    assert all(r.factor != "throughput" for r in interactive[0].reasons)


def test_close_rates_cost_little_and_one_side_alone_nothing() -> None:
    ranker = EndpointRanker(_quic_first_policy())
    ranker.record_throughput(Transport.DIRECT_QUIC, 400e6, 1.0)
    assert ranker.rank([QUIC, TCP], 2.0, TrafficClass.BULK)[0].candidate == QUIC
    ranker.record_throughput(Transport.TCP_TLS, 450e6, 1.0)
    ranked = ranker.rank([QUIC, TCP], 2.0, TrafficClass.BULK)
    assert ranked[0].candidate == QUIC  # 0.89x costs ~1 point, less than the 5-point weight gap
    cost = next(r for r in ranked[0].reasons if r.factor == "throughput").contribution
    assert -2.0 < cost < 0.0


async def test_a_busy_dialed_session_is_measured(tmp_path: Path) -> None:
    client_key = NodeKey.generate()
    server = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "s.key",
            cert_dir=tmp_path / "s",
            listen=(LOOPBACK,),
            drain_timeout=0.5,
            allow={"sink": (client_key.node_id,)},  # default deny: the client only
        ),
        key=NodeKey.generate(),
    )
    await server.start()

    async def sink(stream: FabricStream) -> None:
        while await stream.read(1 << 20):
            pass

    server.dispatcher.register("sink", sink)
    peer = PeerConfig(node_id=server.node_id, endpoints=(server.listeners[0].endpoint,))
    client = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "c.key", cert_dir=tmp_path / "c", peers=(peer,), drain_timeout=0.5
        ),
        key=client_key,
    )
    await client.start()
    try:
        session = await client.peers.session(server.node_id)
        stream = await session.open_stream("sink", TrafficClass.BULK)
        chunk = bytes(1 << 16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline:
            stream.write(chunk)
            await stream.drain()
        stream.close()
    finally:
        await client.shutdown()
        await server.shutdown()
    rates = client.dialer.ranker.throughput(asyncio.get_running_loop().time())
    assert rates[Transport.TCP_TLS] > 4e6
