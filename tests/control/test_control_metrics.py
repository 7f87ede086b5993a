"""Every control replica serves /metrics: requests by route and status, nodes by health."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, facts, running_plane


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_control_metrics_count_requests_and_nodes(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            await _exercise(cp, tmp_path)

    asyncio.run(main())


async def _exercise(cp: Running, tmp_path: Path) -> None:
    key = NodeKey.generate()
    client = cp.client(key, tmp_path / "node")
    await client.enroll(await cp.token("acme", ["relay"]))
    await client.heartbeat(facts())
    status, _ = await cp.admin("GET", "/v1/admin/nodes")
    assert status == 200
    async with cp.http.post(cp.url + "/v1/heartbeat", data=b"{}") as response:
        assert response.status == 401  # unsigned
    async with cp.http.get(cp.url + "/metrics") as response:
        assert response.status == 200
        samples = _samples(await response.text())
    ok = ("method", "POST"), ("route", "/v1/heartbeat"), ("status", "2xx")
    refused = ("method", "POST"), ("route", "/v1/heartbeat"), ("status", "4xx")
    assert samples[("accessfabric_control_requests_total", ok)] == 1
    assert samples[("accessfabric_control_requests_total", refused)] == 1
    assert samples[("accessfabric_control_nodes", (("health", "healthy"),))] == 1
    assert samples[("accessfabric_control_nodes", (("health", "unreachable"),))] == 0
    # Route labels are templates, never concrete ids.
    assert not any("afn1" in value for _, labels in samples for _, value in labels)
    await client.close()
