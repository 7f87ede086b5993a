"""RankedPeerDialer on loopback: pin failures are distinct, counters export, [ranking] parses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.carriers.errors import CertificatePinMismatch
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.dialing.address import Endpoint, parse_endpoint_url
from accessfabric.node.dialing.dial import listen
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.https_endpoints import connect_https
from accessfabric.node.dialing.peer_dialer import (
    PeerPinMismatchError,
    RankedPeerDialer,
    dial_metric_samples,
    endpoint_candidate,
)
from accessfabric.node.dialing.peers import PeerSessionManager, PeerUnreachableError
from accessfabric.node.dialing.ranking import Transport

LOOPBACK = "127.0.0.1"


def node(path: Path) -> LocalNode:
    return LocalNode(key=NodeKey.generate(), cert_dir=path)


def test_endpoint_urls_map_to_transports() -> None:
    cases = {
        "tcp://h:1": Transport.TCP_TLS,
        "wss://h:2/fabric": Transport.WEBSOCKET,
        "quic://h:3": Transport.DIRECT_QUIC,
        "https://h:4/fabric-poll": Transport.HTTPS_FALLBACK,
    }
    for url, transport in cases.items():
        candidate = endpoint_candidate(parse_endpoint_url(url), "n")
        assert candidate.transport is transport and candidate.address == url


async def _listeners(server: LocalNode) -> list[Endpoint]:
    bound = []
    for carrier in ("tcp", "quic", "https"):
        path = "/fabric-poll" if carrier == "https" else ""
        endpoint = Endpoint(carrier=carrier, host=LOOPBACK, port=0, path=path)
        bound.append(await listen(server, endpoint, lambda c: None))
    return [b.endpoint for b in bound]


def test_pin_failure_is_a_clean_distinct_error(tmp_path: Path) -> None:
    async def main() -> None:
        server = node(tmp_path / "s")
        endpoints = await _listeners(server)
        dialer = RankedPeerDialer(node(tmp_path / "c"), timeout=5.0)
        manager = PeerSessionManager(
            lambda e, n: asyncio.sleep(0, None),  # type: ignore[arg-type,return-value]
            [(NodeKey.generate().node_id, endpoints)],
            opener=dialer.open,
        )
        wrong = manager.peer_ids[0]
        with pytest.raises(PeerPinMismatchError) as caught:
            await manager.session(wrong)
        assert not isinstance(caught.value, PeerUnreachableError)
        assert len(caught.value.pin_failures) == 3  # every carrier caught the impostor
        assert manager.counters().dial_failures == 1
        assert dialer.counters.exhausted == 1
        await dialer.aclose()

    asyncio.run(main())


def test_unreachable_peer_is_not_a_pin_error_and_counters_export(tmp_path: Path) -> None:
    async def main() -> None:
        dialer = RankedPeerDialer(node(tmp_path / "c"), timeout=1.0)
        endpoints = [
            parse_endpoint_url("tcp://127.0.0.1:9"),
            parse_endpoint_url("https://127.0.0.1:9/x"),
        ]
        with pytest.raises(PeerUnreachableError) as caught:
            await dialer.open(NodeKey.generate().node_id, endpoints)
        assert len(caught.value.attempts) == 2
        samples = {
            (name, tuple(sorted(labels.items()))): v
            for name, labels, v in dial_metric_samples(dialer.counters)
        }
        assert samples[("accessfabric_dial_attempts_total", ())] == 2
        assert samples[("accessfabric_dial_exhausted_total", ())] == 1
        key = (
            "accessfabric_dial_selected_total",
            (("fallback", "true"), ("transport", "https_fallback")),
        )
        assert samples[key] == 0
        await dialer.aclose()

    asyncio.run(main())


def test_https_fingerprint_pin_fails_before_any_request(tmp_path: Path) -> None:
    async def main() -> None:
        server = node(tmp_path / "s")
        https = next(e for e in await _listeners(server) if e.carrier == "https")
        with pytest.raises(CertificatePinMismatch):
            await connect_https(
                node(tmp_path / "c"), https.url, expected_peer_id=server.key.node_id,
                certificate_fingerprint=b"\0" * 32,
            )  # fmt: skip

    asyncio.run(main())


def test_ranking_section_maps_to_policy(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'key_path = "k"\n[ranking]\nbackoff_base = 1.5\nhalf_life = 60\n'
        "[ranking.interactive]\ndirect_quic = 70\n"
        '[[listen]]\ncarrier = "https"\naddress = "127.0.0.1:0"\n'
        '[[listen]]\ncarrier = "quic"\naddress = "127.0.0.1:0"\n'
    )
    config = load_node_config(path, environ={})
    assert config.ranking.backoff_base == 1.5 and config.ranking.half_life == 60
    assert config.ranking.interactive.direct_quic == 70
    assert config.ranking.interactive.tcp_tls == 50  # the rest keep their defaults
    assert [e.url for e in config.listen] == [
        "https://127.0.0.1:0/fabric-poll",
        "quic://127.0.0.1:0",
    ]
    path.write_text('key_path = "k"\n[ranking.bulk]\ntcp_tls = 500\n')
    with pytest.raises(ConfigError, match=r"ranking\.bulk"):
        load_node_config(path, environ={})
    path.write_text('key_path = "k"\n[ranking]\nhalflife = 1\n')
    with pytest.raises(ConfigError, match=r"ranking\.halflife: unknown key"):
        load_node_config(path, environ={})
