"""HTTPS fallback carrier specifics: through a buffering, TLS-terminating nginx; refusals.

nginx runs as in ``test_websocket.py`` (Debian ``nginx-light``, on loopback) but as the
most ordinary HTTP reverse proxy: no upgrade headers, request and response buffering on,
a short keep-alive to the client — the path the fallback exists for.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accessfabric.errors import AuthenticationError, IdentityMismatchError
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.https_endpoints import connect_https, serve_https
from tests.carriers.pairs import LOOPBACK, make_node, serving
from tests.carriers.test_websocket import (
    free_port,
    make_proxy_certificate,
    proxied_pair_works,
    running_nginx,
)

SERVER = """
  server {{
    listen {listen} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 5s;
    location /fabric-poll/ {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering on;
      proxy_request_buffering on;
      proxy_read_timeout 60s;
      proxy_ssl_protocols TLSv1.3;
    }}
  }}
"""


@dataclass
class Proxy:
    ca: Path
    port: int
    """TLS with the proxy's certificate -> plain HTTP to ``unbound_upstream``."""
    to_bound_port: int
    """TLS with the proxy's certificate -> HTTPS to ``bound_upstream`` (re-encrypting)."""
    unbound_upstream: int
    bound_upstream: int


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("nginx-poll")
    ca, cert, key = make_proxy_certificate(tmp)
    config = Proxy(ca, *(free_port() for _ in range(4)))
    servers = SERVER.format(
        listen=f"{LOOPBACK}:{config.port}", cert=cert, key=key,
        upstream=f"http://{LOOPBACK}:{config.unbound_upstream}",
    ) + SERVER.format(
        listen=f"{LOOPBACK}:{config.to_bound_port}", cert=cert, key=key,
        upstream=f"https://{LOOPBACK}:{config.bound_upstream}",
    )  # fmt: skip
    with running_nginx(tmp, servers, config.port):
        yield config


def _proxy_tls(proxy: Proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca))


async def test_behind_proxy_fallback_works_through_buffering_nginx(
    proxy: Proxy, tmp_path: Path
) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(
        serve_https, server_node, proxy.unbound_upstream, behind_proxy=True, tls=False
    ) as (_, accepted):
        dialer = await connect_https(
            dialer_node,
            f"https://{LOOPBACK}:{proxy.port}/fabric-poll",
            expected_peer_id=server_node.key.node_id,
            proxy_tls=_proxy_tls(proxy),
        )
        assert dialer.info.kind == "https_fallback"
        await proxied_pair_works(dialer, accepted, dialer_node, server_node)


async def test_proxy_mode_pins_the_node_behind_the_proxy(proxy: Proxy, tmp_path: Path) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(
        serve_https, server_node, proxy.unbound_upstream, behind_proxy=True, tls=False
    ):
        with pytest.raises(IdentityMismatchError):
            await connect_https(
                dialer_node,
                f"https://{LOOPBACK}:{proxy.port}/fabric-poll",
                expected_peer_id=NodeKey.generate().node_id,
                proxy_tls=_proxy_tls(proxy),
            )
        with pytest.raises(ValueError, match="expected_peer_id"):
            await connect_https(
                dialer_node, f"https://{LOOPBACK}:{proxy.port}/fabric-poll",
                proxy_tls=_proxy_tls(proxy),
            )  # fmt: skip


async def test_proxy_mode_dialer_fails_against_a_bound_listener(
    proxy: Proxy, tmp_path: Path
) -> None:
    """No silent downgrade: the bound listener binds tls-unique, the dialer binds nothing."""
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_https, server_node, proxy.bound_upstream):
        with pytest.raises(AuthenticationError):
            await connect_https(
                dialer_node,
                f"https://{LOOPBACK}:{proxy.to_bound_port}/fabric-poll",
                expected_peer_id=server_node.key.node_id,
                proxy_tls=_proxy_tls(proxy),
            )


async def test_plain_listener_must_be_behind_proxy_and_unknown_paths_are_404(
    tmp_path: Path,
) -> None:
    local = make_node(tmp_path / "s")
    with pytest.raises(ValueError, match="behind_proxy"):
        await serve_https(local, LOOPBACK, 0, lambda c: None, tls=False)
    server = await serve_https(local, LOOPBACK, 0, lambda c: None)
    try:
        with pytest.raises(ConnectionError, match="404"):
            await connect_https(
                make_node(tmp_path / "d"), f"https://{LOOPBACK}:{server.port}/elsewhere",
                expected_peer_id=local.key.node_id,
            )  # fmt: skip
    finally:
        await server.wait_closed()


async def test_connect_https_refuses_unsafe_proxy_options(tmp_path: Path) -> None:
    """The same checks as the WebSocket dial (one dial_context), plus the fingerprint pin."""
    node = make_node(tmp_path / "n")
    peer = NodeKey.generate().node_id
    url = f"https://{LOOPBACK}:1/fabric-poll"
    verified = ssl.create_default_context()
    with pytest.raises(ValueError, match="expected_peer_id"):
        await connect_https(node, url, proxy_tls=verified)
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verify"):
        await connect_https(node, url, expected_peer_id=peer, proxy_tls=unverified)
    with pytest.raises(ValueError, match="cannot hold through a proxy"):
        await connect_https(
            node, url, expected_peer_id=peer, proxy_tls=verified, certificate_fingerprint=b"x" * 32
        )
