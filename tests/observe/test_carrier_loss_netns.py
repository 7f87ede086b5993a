"""Induced loss shows on a real node's /metrics.

nftables drops 20 % of the packets the server namespace sends to the client, as they
arrive (a drop in the sender's own output path is a local congestion signal that TCP
re-sends without counting a retransmission); a client in the other namespace echoes
bytes through the server node's built-in ``echo`` service; the server's TCP retransmits
are counted, kept after the session ends, and labelled by carrier only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.node.harness import command_env, keygen, wait_node_ready

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
PORT, METRICS_PORT = 7443, 9464
TOTAL = 4 * 1024 * 1024
LOSS_PERCENT = 20.0
SCRAPE = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Lab:
    def __init__(self, topo: Any, address: str, node_id: str, tmp_path: Path) -> None:
        self.topo = topo
        self.address = address
        self.node_id = node_id
        self.tmp_path = tmp_path

    def echo(self, total: int) -> dict[str, Any]:
        result = self.topo.run(
            "client",
            [
                "env", f"PYTHONPATH={ROOT / 'src'}:{ROOT}",
                sys.executable, "-m", "tests.observe.echo_client",
                "--host", self.address, "--port", str(PORT), "--peer", self.node_id,
                "--total", str(total), "--cert-dir", str(self.tmp_path / "client-tls"),
            ],
            timeout=120,
        )  # fmt: skip
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return report

    def drop_arriving(self, percent: float) -> None:
        """Drop ``percent`` % of the server's TCP segments as they arrive at the client."""
        threshold = round(percent * 100)
        script = (
            "table inet afloss {\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            f"    ip saddr {self.address} tcp sport {PORT}"
            f" numgen random mod 10000 < {threshold} drop\n"
            "  }\n"
            "}\n"
        )
        self.topo.run("client", ["nft", "-f", "-"], input=script)

    def scrape(self) -> Samples:
        url = f"http://{self.address}:{METRICS_PORT}/metrics"
        text = self.topo.run("server", [sys.executable, "-c", SCRAPE, url]).stdout
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    from accessfabric.sim import Topology, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = dict(command_env(), PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    node_id = keygen(tmp_path / "server.key")
    with Topology(prefix="afm") as topo:
        topo.add_host("client")
        topo.add_host("server")
        address = topo.link("client", "server").address("server")
        config = tmp_path / "server.toml"
        config.write_text(
            f'key_path = "server.key"\nlog_json = true\n'
            f'metrics_listen = "{address}:{METRICS_PORT}"\n\n'
            f'[[listen]]\ncarrier = "tcp"\naddress = "{address}:{PORT}"\n'
            '[allow]\necho = ["*"]\n'  # default deny: the echo client's key is a fresh one
        )
        server = topo.popen(
            "server",
            [sys.executable, "-m", "accessfabric", "node", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(ROOT),
        )
        wait_node_ready(server)
        yield Lab(topo, address, node_id, tmp_path)
        server.terminate()
        server.wait(timeout=15)


def _carrier(samples: Samples, name: str) -> float:
    return samples.get((name, (("carrier", "tcp_tls"),)), 0.0)


def test_retransmits_under_induced_loss_reach_the_node_metrics(lab: Lab) -> None:
    clean = lab.echo(TOTAL)
    assert clean["echoed"] == TOTAL
    before = lab.scrape()
    sent_before = _carrier(before, "accessfabric_carrier_segments_sent_total")
    retransmitted_before = _carrier(before, "accessfabric_carrier_retransmitted_segments_total")
    assert sent_before >= TOTAL // 65536  # the echo came back in segments the node counted

    lab.drop_arriving(LOSS_PERCENT)
    lossy = lab.echo(TOTAL)
    assert lossy["echoed"] == TOTAL
    after = lab.scrape()
    sent = _carrier(after, "accessfabric_carrier_segments_sent_total") - sent_before
    retransmitted = (
        _carrier(after, "accessfabric_carrier_retransmitted_segments_total") - retransmitted_before
    )
    # The veth MTU is 1500: ~2900 data segments back to the client.  A dropped packet
    # is often a TSO burst of up to 64 KiB (veth hands them over whole), so a few dozen
    # drops cost hundreds of retransmitted segments; the clean run had a tail probe or two.
    assert sent > TOTAL // 1500
    assert retransmitted >= 20 + 5 * retransmitted_before, (sent, retransmitted)
    ratio = _carrier(after, "accessfabric_carrier_retransmit_ratio")
    assert 0 < ratio < 0.5
    # Both sessions ended: what they counted stayed (the totals only grew).
    assert ("accessfabric_sessions", (("carrier", "tcp_tls"), ("state", "ready"))) not in after
    for key, value in before.items():
        if key[0].endswith("_total") and key in after:
            assert after[key] >= value, key
    for name, labels in after:
        if name.startswith("accessfabric_carrier_"):
            assert {label for label, _ in labels} <= {"carrier", "le"}, (name, labels)
