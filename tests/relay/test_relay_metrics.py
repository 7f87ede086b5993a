"""The relay's accounting as an operator sees it: ``accessfabric_relay_*`` and the status section.

Collector and section over real :class:`RelayQuotas`, and which nodes show the section
(no sockets); the loopback tests are in ``test_relay_accounting_loopback.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.control.kernel.authority import Authority
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.observability import NodeObservability
from accessfabric.node.admin.status import render
from accessfabric.node.relaying.relay_limits import RelayLimits, RelayQuotas, RelayRefused
from accessfabric.node.relaying.relay_metrics import RelayMetrics, relay_status
from accessfabric.node.runtime import NodeRuntime
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import config

Sample = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class RelayCounts:
    """What :class:`~accessfabric.node.relaying.relay.Relay` exposes to its metrics and status."""

    quotas: RelayQuotas
    active: int = 0
    gone: int = 0
    callback_errors: int = 0


def scrape(relay: RelayCounts) -> dict[Sample, float]:
    """The collector's output as Prometheus text, parsed back: (name, labels) -> value."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RelayMetrics(relay))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


async def busy_relay() -> RelayCounts:
    """Tenant acme: two bulk streams (one ended), one interactive; one refused; bytes."""
    quotas = RelayQuotas(RelayLimits(max_streams_per_tenant=2))
    quotas.admit("acme", TrafficClass.BULK, resume=False)
    quotas.admit("acme", TrafficClass.BULK, resume=True)
    await quotas.spend("acme", TrafficClass.BULK, 5000, upstream=True)
    await quotas.spend("acme", TrafficClass.BULK, 300, upstream=False)
    with pytest.raises(RelayRefused):
        quotas.admit("acme", TrafficClass.INTERACTIVE, resume=False)
    quotas.release("acme", TrafficClass.BULK)
    quotas.admit("acme", TrafficClass.INTERACTIVE, resume=False)
    await quotas.spend("acme", TrafficClass.INTERACTIVE, 7, upstream=True)
    return RelayCounts(quotas, active=2, gone=3, callback_errors=1)


def acme(cls: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"tenant": "acme", "class": cls, **extra}.items()))


async def test_collector_exports_accounting_with_bounded_labels() -> None:
    samples = scrape(await busy_relay())
    assert samples == {
        ("accessfabric_relay_streams_total", acme("bulk")): 2,
        ("accessfabric_relay_streams_total", acme("interactive")): 1,
        ("accessfabric_relay_active_streams", acme("bulk")): 1,
        ("accessfabric_relay_active_streams", acme("interactive")): 1,
        ("accessfabric_relay_bytes_total", acme("bulk", direction="from_source")): 5000,
        ("accessfabric_relay_bytes_total", acme("bulk", direction="to_source")): 300,
        ("accessfabric_relay_bytes_total", acme("interactive", direction="from_source")): 7,
        ("accessfabric_relay_bytes_total", acme("interactive", direction="to_source")): 0,
        (
            "accessfabric_relay_refused_total",
            (("reason", "tenant_streams"), ("tenant", "acme")),
        ): 1,
        ("accessfabric_relay_streams_gone_total", ()): 3,
        ("accessfabric_relay_callback_errors_total", ()): 1,
    }


def test_an_idle_relay_exports_zero_incidents_and_no_tenants() -> None:
    samples = scrape(RelayCounts(RelayQuotas()))
    assert samples == {
        ("accessfabric_relay_streams_gone_total", ()): 0,
        ("accessfabric_relay_callback_errors_total", ()): 0,
    }


def row(
    cls: str, *, streams: int, active: int, resumes: int, up: int, down: int
) -> dict[str, object]:
    return {
        "tenant": "acme", "class": cls, "streams": streams, "active": active,
        "resumes": resumes, "bytes_from_source": up, "bytes_to_source": down,
    }  # fmt: skip


async def test_status_section_has_totals_and_per_tenant_tables() -> None:
    section = relay_status(await busy_relay())
    assert section == {
        "active": 2,
        "gone": 3,
        "callback_errors": 1,
        "relayed": [
            row("interactive", streams=1, active=1, resumes=0, up=7, down=0),
            row("bulk", streams=2, active=1, resumes=1, up=5000, down=300),
        ],
        "refused": [{"tenant": "acme", "reason": "tenant_streams", "streams": 1}],
    }
    lines = [line.rstrip() for line in render({"node_id": "n", "relay": section}).splitlines()]
    start = lines.index("relay:")
    assert lines[start + 1 : start + 4] == [
        "  active           2",
        "  gone             3",
        "  callback_errors  1",
    ]
    assert lines[start + 4] == "  relayed:"
    assert lines[start + 5].split() == [
        "TENANT", "CLASS", "STREAMS", "ACTIVE", "RESUMES", "BYTES_FROM_SOURCE", "BYTES_TO_SOURCE"
    ]  # fmt: skip
    assert lines[start + 7].split() == ["acme", "bulk", "2", "1", "1", "5000", "300"]
    assert lines[start + 8 :] == [
        "  refused:",
        "    TENANT  REASON          STREAMS",
        "    acme    tenant_streams  1",
    ]


async def test_section_shown_on_relay_role_or_once_something_was_relayed() -> None:
    idle = RelayCounts(RelayQuotas())
    observe = NodeObservability("node")
    observe.watch_relay(idle, always=False)
    assert "relay" not in observe.status()
    idle.gone += 1  # a stream skipped counts as relay activity
    assert observe.status()["relay"]["gone"] == 1

    relay_role = NodeObservability("relay")
    relay_role.watch_relay(RelayCounts(RelayQuotas()), always=True)
    assert relay_role.status()["relay"] == {
        "active": 0, "gone": 0, "callback_errors": 0, "relayed": [], "refused": []
    }  # fmt: skip
    assert "  relayed:\n    (none)" in render(relay_role.status())


async def test_a_node_with_the_relay_role_always_shows_the_section(tmp_path: Path) -> None:
    authority = Authority(NodeKey.generate())
    plain = config(tmp_path, "plain", authority)
    relay_role = dataclasses.replace(config(tmp_path, "relay", authority), roles=("relay",))
    assert "relay" not in NodeRuntime(plain, key=NodeKey.generate()).observe.status()
    section = NodeRuntime(relay_role, key=NodeKey.generate()).observe.status()["relay"]
    assert section["active"] == 0 and section["relayed"] == []
