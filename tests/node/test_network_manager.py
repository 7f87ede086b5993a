"""Network type and metered from NetworkManager over a real D-Bus (node/host/network_manager.py).

A private ``dbus-daemon`` (Debian package ``dbus-daemon``) runs on a socket in
``tmp_path``; ``tests/node/fake_network_manager.py`` owns ``org.freedesktop.NetworkManager``
on it and answers the real property names.  The node's client is jeepney's, unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.host.host_monitor import HostMonitor
from accessfabric.node.host.network_manager import NetworkFacts, read_network_manager
from tests.conditions import until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon not installed (Debian package dbus-daemon)")
    address = f"unix:path={tmp_path / 'bus'}"
    process = subprocess.Popen(
        [daemon, "--session", f"--address={address}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("unix:path="), "dbus-daemon did not start"
        yield address
    finally:
        process.terminate()
        process.wait(timeout=5)


class FakeNetworkManager:
    def __init__(self, address: str, state: Path) -> None:
        self.state = state
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.node.fake_network_manager", address, str(state)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def set(self, connection_type: str, metered: int) -> None:
        state = {"PrimaryConnectionType": connection_type, "Metered": metered, "State": 70}
        self.state.write_text(json.dumps(state))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=5)


@pytest.fixture
def network_manager(bus: str, tmp_path: Path) -> Iterator[FakeNetworkManager]:
    state = tmp_path / "nm.json"
    state.write_text(json.dumps({"PrimaryConnectionType": "gsm", "Metered": 1, "State": 70}))
    fake = FakeNetworkManager(bus, state)
    try:
        yield fake
    finally:
        fake.stop()


async def test_the_client_reads_the_real_properties(
    bus: str, network_manager: FakeNetworkManager
) -> None:
    assert await read_network_manager(bus) == NetworkFacts("cellular", True)
    network_manager.set("802-11-wireless", 4)  # guess-no
    assert await read_network_manager(bus) == NetworkFacts("wifi", False)
    network_manager.set("802-3-ethernet", 0)  # metered unknown
    assert await read_network_manager(bus) == NetworkFacts("wired", None)
    network_manager.set("", 3)  # offline, guess-yes
    assert await read_network_manager(bus) == NetworkFacts(None, True)
    network_manager.stop()  # the bus answers ServiceUnknown
    assert await read_network_manager(bus) is None


async def test_no_bus_is_no_answer(tmp_path: Path) -> None:
    assert await read_network_manager(f"unix:path={tmp_path / 'none'}") is None
    assert await read_network_manager("tcp:host=127.0.0.1,port=1") is None


async def test_a_metered_network_pauses_mobile_relaying_and_config_is_the_fallback(
    bus: str, network_manager: FakeNetworkManager, tmp_path: Path
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'key_path = "n.key"\nroles = ["mobile-edge", "entry"]\n[device]\n'
        f'power_supply = "{tmp_path / "no-power"}"\nrelay_opt_in = true\n'
        f'network_type = "satellite"\nsystem_bus = "{bus}"\nnetwork_manager_interval = 0.1\n'
    )
    monitor = HostMonitor(load_node_config(path), list)
    assert monitor.relay_refusal() is None and monitor.network_source == "config"
    await monitor.start()
    try:
        # NetworkManager says cellular, metered: relaying pauses, the heartbeat says so
        await until(lambda: monitor.relay_refusal() is not None, what="metered via D-Bus")
        assert "metered" in str(monitor.relay_refusal())
        fields = monitor.heartbeat_fields(False)
        assert (fields["network_type"], fields["metered"]) == ("cellular", True)
        assert not fields["relay_opt_in"]
        status = monitor.status()
        assert (status["network_type"], status["metered"]) == ("cellular", True)
        assert status["network_source"] == "networkmanager"
        # Wi-Fi, not metered: relaying resumes
        network_manager.set("802-11-wireless", 2)
        await until(lambda: monitor.relay_refusal() is None, what="unmetered via D-Bus")
        assert monitor.status()["network_type"] == "wifi"
        # NetworkManager gone: the config's values again
        network_manager.stop()
        await until(lambda: monitor.network_source == "config", what="fallback to config")
        assert monitor.heartbeat_fields(False)["network_type"] == "satellite"
    finally:
        await monitor.close()
