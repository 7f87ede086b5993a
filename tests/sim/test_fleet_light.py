"""The fleet's light device profile: the devices of a worker share one reading of
``/proc`` per interval, each with its share of the process's CPU (ADR 0037), given at
construction so a device never reads its process on its own; a node process reads its
own."""

from __future__ import annotations

import os
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, load_node_config
from accessfabric.node.host.host_monitor import HostMonitor, OwnReadings, SharedReadings
from accessfabric.node.runtime import NodeRuntime


def _config(tmp_path: Path) -> NodeConfig:
    path = tmp_path / "device.toml"
    path.write_text('key_path = "device.key"\nroles = ["mobile-edge"]\n')
    return load_node_config(path, environ={})


def test_devices_share_one_reading(tmp_path: Path) -> None:
    config = _config(tmp_path)
    shared = SharedReadings(fresh=60.0, users=4)
    monitors = [HostMonitor(config, list, readings=shared) for _ in range(4)]
    sum(i * i for i in range(300_000))  # some CPU for the process
    for _ in range(3):
        for monitor in monitors:
            monitor.sample(0.0)
    # sixteen samples (the first at construction), one reading of /proc, and no monitor
    # made readings of its own
    assert shared.taken == 1
    assert all(m.readings is shared and m._own_readings is None for m in monitors)
    assert len({id(m.fds) for m in monitors}) == 1
    assert all(m.process_cpu == monitors[0].process_cpu for m in monitors)
    own = SharedReadings(fresh=0.0, users=1)
    assert own.read(0.0, config.device.power_supply) is not own.read(
        0.0, config.device.power_supply
    )
    assert own.taken == 2


def test_a_runtime_takes_the_light_profile_only_when_asked(tmp_path: Path) -> None:
    config = _config(tmp_path)
    key = NodeKey.generate()
    shared = SharedReadings(fresh=60.0, users=2)
    light = [NodeRuntime(config, key=key, host_readings=shared) for _ in range(2)]
    assert shared.taken == 1  # both constructions, one reading
    assert all(r.host.readings is shared for r in light)
    node = NodeRuntime(config, key=key)
    assert isinstance(node.host.readings, OwnReadings)


def test_a_node_reads_its_own_process(tmp_path: Path) -> None:
    monitor = HostMonitor(_config(tmp_path), list)
    assert isinstance(monitor.readings, OwnReadings)
    before = monitor.fds.open
    assert before > 0
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
    try:
        monitor.sample(0.0)  # a fresh reading of /proc/self every sample
        assert monitor.fds.open >= before + 20
    finally:
        for fd in opened:
            os.close(fd)
    monitor.sample(0.0)
    assert monitor.fds.open < before + 20
