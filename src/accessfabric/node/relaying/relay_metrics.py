"""What a relay tells its operator: Prometheus families and the ``relay`` status section.

Both read the relay's in-memory accounting when scraped or asked, nothing is copied:
:class:`~accessfabric.node.relaying.relay_limits.RelayQuotas` per (tenant, class) — streams,
active, resumes, bytes each way, refusals by reason — and the relay's own counts of
streams skipped because their session no longer had them (``gone``) and of errors
caught before they reached a session's event callback (``callback_errors``).

Labels are bounded: ``tenant`` is the tenant the stream's route lease names (signed by
the control plane: the source's tenant; only a lease that verified and names this node
gets as far as the quotas), ``class`` a traffic class name, ``direction`` and ``reason``
fixed sets.  Never a stream id, a route, a token or a payload byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from accessfabric.node.relaying.relay_limits import RelayQuotas


class RelayView(Protocol):
    """What the relay's metrics and status read of
    :class:`~accessfabric.node.relaying.relay.Relay`."""

    @property
    def quotas(self) -> RelayQuotas: ...

    @property
    def active(self) -> int: ...

    @property
    def gone(self) -> int: ...

    @property
    def callback_errors(self) -> int: ...


class RelayMetrics(Collector):
    """``accessfabric_relay_*``: the relay's accounting in Prometheus text form."""

    def __init__(self, relay: RelayView) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        yield from self._usage()
        refused = CounterMetricFamily(
            "accessfabric_relay_refused", "Relayed streams refused", labels=["tenant", "reason"]
        )
        for (tenant, reason), count in sorted(self.relay.quotas.refused.items()):
            refused.add_metric([tenant, reason], count)
        yield refused
        yield CounterMetricFamily(
            "accessfabric_relay_streams_gone",
            "Relayed streams skipped: their session no longer had them",
            value=self.relay.gone,
        )
        yield CounterMetricFamily(
            "accessfabric_relay_callback_errors",
            "Unexpected relay errors caught before they reached a session",
            value=self.relay.callback_errors,
        )

    def _usage(self) -> Iterator[Metric]:
        streams = CounterMetricFamily(
            "accessfabric_relay_streams", "Streams relayed", labels=["tenant", "class"]
        )
        active = GaugeMetricFamily(
            "accessfabric_relay_active_streams", "Streams relayed now", labels=["tenant", "class"]
        )
        relayed = CounterMetricFamily(
            "accessfabric_relay_bytes",
            "Stream bytes relayed (payload never inspected)",
            labels=["tenant", "class", "direction"],
        )
        for (tenant, cls), usage in sorted(self.relay.quotas.usage.items()):
            name = cls.name.lower()
            streams.add_metric([tenant, name], usage.streams)
            active.add_metric([tenant, name], usage.active)
            relayed.add_metric([tenant, name, "from_source"], usage.bytes_up)
            relayed.add_metric([tenant, name, "to_source"], usage.bytes_down)
        yield from (streams, active, relayed)
        window = GaugeMetricFamily(
            "accessfabric_relay_quota_bytes",
            "Bytes relayed for the tenant in its current quota window (relay_bytes_per_tenant)",
            labels=["tenant"],
        )
        for row in self.relay.quotas.quota_status():
            window.add_metric([row["tenant"]], row["bytes"])
        yield window


def relayed_anything(relay: RelayView) -> bool:
    """Whether the relay ever claimed, refused or skipped a stream or caught an error."""
    quotas = relay.quotas
    return bool(quotas.usage or quotas.refused or relay.gone or relay.callback_errors)


def relay_status(relay: RelayView) -> dict[str, Any]:
    """The ``relay`` section of ``accessfabric status``: totals, then per-tenant tables."""
    quotas = relay.quotas
    return {
        "active": relay.active,
        "gone": relay.gone,
        "callback_errors": relay.callback_errors,
        "relayed": [
            {
                "tenant": tenant,
                "class": cls.name.lower(),
                "streams": usage.streams,
                "active": usage.active,
                "resumes": usage.resumes,
                "bytes_from_source": usage.bytes_up,
                "bytes_to_source": usage.bytes_down,
            }
            for (tenant, cls), usage in sorted(quotas.usage.items())
        ],
        "refused": [
            {"tenant": tenant, "reason": reason, "streams": count}
            for (tenant, reason), count in sorted(quotas.refused.items())
        ],
        **({"quota": quotas.quota_status()} if quotas.limits.tenant_bytes_quota else {}),
    }
