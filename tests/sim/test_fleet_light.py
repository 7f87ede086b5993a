"""The fleet's light device profile: the devices of a worker share one reading of
``/proc`` per interval, each with its share of the process's CPU (ADR 0037)."""

from __future__ import annotations

from pathlib import Path

from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.host.host_monitor import HostMonitor, SharedReadings


def test_devices_share_one_reading(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('key_path = "device.key"\nroles = ["mobile-edge"]\n')
    config = load_node_config(path, environ={})
    shared = SharedReadings(fresh=60.0, users=4)
    monitors = [HostMonitor(config, list) for _ in range(4)]
    for monitor in monitors:
        monitor.readings = shared
    sum(i * i for i in range(300_000))  # some CPU for the process
    for _ in range(3):
        for monitor in monitors:
            monitor.sample(0.0)
    assert shared.taken == 1  # twelve samples, one reading of /proc
    assert len({id(m.fds) for m in monitors}) == 1
    assert all(m.process_cpu == monitors[0].process_cpu for m in monitors)
    own = SharedReadings(fresh=0.0, users=1)
    assert own.read(0.0, config.device.power_supply) is not own.read(
        0.0, config.device.power_supply
    )
    assert own.taken == 2
