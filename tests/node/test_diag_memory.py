"""``accessfabric diag memory`` (ADR 0050): a running node's RSS, C heap, object counts
and, once started, the allocation sites traced since; bounded; over the 0600 admin socket.
One real node process on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.node.harness import run_cli, start_node


def _diag(config: Path, *args: str) -> dict[str, object]:
    done = run_cli("diag", "memory", "--config", str(config), "--json", *args)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert isinstance(document, dict)
    return document


def test_diag_memory_reports_and_traces_allocation_sites(tmp_path: Path) -> None:
    node = start_node(tmp_path, "m")
    config = tmp_path / "m.toml"
    try:
        plain = _diag(config, "--top", "5")
        assert plain["tracing"] is False and "sites" not in plain
        assert isinstance(plain["rss_bytes"], int) and plain["rss_bytes"] > 1 << 20
        types = plain["types"]
        assert isinstance(types, list) and len(types) == 5

        assert _diag(config, "--start")["tracing"] is True
        # A smoke session between start and report: the node allocates for it.
        assert run_cli("smoke", "--peer", node.url, "--peer-id", node.node_id).returncode == 0
        traced = _diag(config, "--top", "3")
        assert traced["tracing"] is True
        sites = traced["sites"]
        assert isinstance(sites, list) and len(sites) == 3
        assert all(":" in site["site"] and site["bytes"] > 0 for site in sites)
        assert isinstance(traced["traced_bytes"], int) and traced["traced_bytes"] > 0

        assert _diag(config, "--stop")["tracing"] is False
        refused = run_cli("diag", "memory", "--config", str(config), "--top", "100000")
        assert refused.returncode == 2 and "top" in refused.stderr, refused.stderr
    finally:
        node.terminate()
