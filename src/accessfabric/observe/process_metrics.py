"""Process-wide metrics every ``/metrics`` serves: prometheus_client's process, platform and
GC collectors, plus ``accessfabric_build_info`` (version, commit, protocol versions; value 1).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector


class BuildInfoCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        from accessfabric.version_info import version_info

        info = version_info()
        family = GaugeMetricFamily(
            "accessfabric_build_info",
            "This build: version, source commit and protocol versions (always 1).",
            labels=["version", "commit", "fabric_protocols", "control_api", "python"],
        )
        protocols = info["protocols"]
        family.add_metric(
            [
                info["version"], info["commit"],
                ",".join(str(v) for v in protocols["fabric_session"]),
                protocols["control_api"], info["python"],
            ],
            1.0,
        )  # fmt: skip
        yield family


def register_process_collectors(registry: CollectorRegistry) -> None:
    """Add process (CPU, memory, fds), platform, GC and build-info metrics to ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BuildInfoCollector())
