"""Ranked dialing across real namespaces, carriers blocked with nftables in the server's.

The server is a real ``accessfabric node run`` with tcp, quic, websocket and https
listeners; the dialer (``tests/node/fallback_dialer.py``) runs in the client namespace
with a 2 s dial timeout, a 1 s backoff and a policy that prefers QUIC for interactive
traffic (70 points against TCP+TLS's 50) but TCP+TLS for bulk (the defaults).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.harness import command_env, keygen, wait_node_ready

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"tcp": 7443, "quic": 7444, "websocket": 7445, "https": 7446}


class Dialer:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["ready"]

    def dial(self, traffic_class: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"dial {traffic_class}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the dialer process died"
        result: dict[str, Any] = json.loads(line)
        return result


class Fabric:
    def __init__(self, topo: Any, server_address: str) -> None:
        self.topo = topo
        self.server_address = server_address

    def block(self, *rules: str) -> None:
        """Drop matching input in the server namespace (``udp dport 7444`` ...)."""
        self.topo.run("server", ["nft", "add", "table", "inet", "afblock"])
        self.topo.run(
            "server",
            ["nft", "add chain inet afblock input { type filter hook input priority 0 ; }"],
        )
        for rule in rules:
            self.topo.run("server", ["nft", f"add rule inet afblock input {rule} drop"])

    def unblock(self) -> None:
        self.topo.run("server", ["nft", "delete", "table", "inet", "afblock"])


@pytest.fixture
def fabric(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fabric, Dialer]]:
    """The two namespaces, the server node, and a dialer whose backoff is ``request.param``."""
    from accessfabric.sim import Topology, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = dict(command_env(), PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    node_id = keygen(tmp_path / "server.key")
    with Topology(prefix="aff") as topo:
        topo.add_host("client")
        topo.add_host("server")
        link = topo.link("client", "server")
        address = link.address("server")
        listeners = "".join(
            f'[[listen]]\ncarrier = "{carrier}"\naddress = "{address}:{port}"\n\n'
            for carrier, port in PORTS.items()
        )
        config = tmp_path / "server.toml"
        allow = '[allow]\necho = ["*"]\n'  # default deny: the client's key is a fresh one
        config.write_text(f'key_path = "server.key"\nlog_json = true\n\n{listeners}{allow}')
        server = topo.popen(
            "server",
            [sys.executable, "-m", "accessfabric", "node", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(ROOT),
        )
        process = _text(server)
        wait_node_ready(process)
        endpoints = ",".join(
            [
                f"tcp://{address}:{PORTS['tcp']}",
                f"quic://{address}:{PORTS['quic']}",
                f"wss://{address}:{PORTS['websocket']}/fabric",
                f"https://{address}:{PORTS['https']}/fabric-poll",
            ]
        )
        dialer = topo.popen(
            "client",
            [
                sys.executable,
                "-m",
                "tests.node.fallback_dialer",
                "--peer",
                node_id,
                "--endpoints",
                endpoints,
                "--cert-dir",
                str(tmp_path / "client-tls"),
                "--backoff",
                str(getattr(request, "param", 1.0)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(ROOT),
        )
        yield Fabric(topo, address), Dialer(_text(dialer))
        if dialer.stdin is not None:
            dialer.stdin.close()
        dialer.wait(timeout=10)
        server.terminate()
        server.wait(timeout=15)


def _text(process: subprocess.Popen[bytes]) -> subprocess.Popen[str]:
    """Wrap the byte pipes of a namespace process in text streams (line-buffered)."""
    import io

    for name in ("stdin", "stdout", "stderr"):
        pipe = getattr(process, name)
        if pipe is not None:
            wrapped = io.TextIOWrapper(pipe, encoding="utf-8", line_buffering=True)
            setattr(process, name, wrapped)
    return process  # type: ignore[return-value]


def test_quic_blocked_uses_tcp_then_quic_is_retried_and_chosen_for_interactive(
    fabric: tuple[Fabric, Dialer],
) -> None:
    net, dialer = fabric
    net.block(f"udp dport {PORTS['quic']}")
    first = dialer.dial("interactive")
    assert first["ok"], first
    assert first["kind"] == "tcp_tls" and first["echo"]
    assert first["ranked"][0] != "direct_quic"  # demoted while in backoff
    net.unblock()
    time.sleep(1.3)  # the 1 s backoff ends; QUIC is kept as a candidate meanwhile
    second = dialer.dial("interactive")
    assert second["ok"], second
    assert second["kind"] == "quic" and second["url"].startswith("quic://") and second["echo"]
    assert second["selected"]["direct_quic"] == 1 and second["selected"]["tcp_tls"] == 1
    bulk = dialer.dial("bulk")  # policy keeps bulk on TCP+TLS, QUIC label or not
    assert bulk["ok"] and bulk["kind"] == "tcp_tls"


@pytest.mark.parametrize("fabric", [30.0], indirect=True)  # a backoff longer than the test
def test_only_https_fallback_gets_through_and_is_marked(fabric: tuple[Fabric, Dialer]) -> None:
    net, dialer = fabric
    net.block(
        f"udp dport {PORTS['quic']}",
        f"tcp dport {{ {PORTS['tcp']}, {PORTS['websocket']} }}",
    )
    started = time.monotonic()
    first = dialer.dial("bulk")
    assert first["ok"], first
    assert first["kind"] == "https_fallback" and first["echo"]
    assert first["url"].startswith("https://")
    assert first["selected"] == {
        "direct_quic": 0, "tcp_tls": 0, "websocket": 0, "https_fallback": 1,
    }  # fmt: skip
    assert first["ranked"][0] == "https_fallback"  # every other candidate is in backoff
    assert time.monotonic() - started < 15
    again = dialer.dial("bulk")  # emergency: the fallback goes first, no 6 s of timeouts
    assert again["ok"] and again["kind"] == "https_fallback"
