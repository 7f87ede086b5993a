"""Facts measured on the machine (node/host/host_facts.py) and the ``[device]``/``[pressure]`` keys.

The battery tests use a fake ``/sys/class/power_supply`` tree in ``tmp_path``; CPU, memory
and descriptors are read from this process's real ``/proc``.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from accessfabric.control.client.facts import (
    FactsError,
    HeartbeatFacts,
    PeerMeasurement,
    parse_facts,
)
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.dialing.nat_probe import NatReport
from accessfabric.node.host.host_facts import (
    CpuSampler,
    CpuShares,
    RunQueueSampler,
    RunQueueShares,
    read_cpu_psi,
    read_fds,
    read_memory,
    read_power,
)
from accessfabric.node.host.host_monitor import HostMonitor, device_handler


def write_supply(root: Path, name: str, **files: str) -> None:
    supply = root / name
    supply.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (supply / key).write_text(value + "\n")


def test_battery_and_charging_from_a_power_supply_tree(tmp_path: Path) -> None:
    assert read_power(tmp_path / "absent").battery_percent is None  # no tree: unknown
    write_supply(tmp_path, "BAT0", type="Battery", capacity="57", status="Discharging")
    write_supply(tmp_path, "AC", type="Mains", online="0")
    power = read_power(tmp_path)
    assert power.battery_percent == 57.0 and power.charging is False
    write_supply(tmp_path, "AC", type="Mains", online="1")  # plugged in
    assert read_power(tmp_path).charging is True
    write_supply(tmp_path, "AC", type="Mains", online="0")
    write_supply(tmp_path, "BAT0", type="Battery", capacity="12", status="Charging")
    power = read_power(tmp_path)
    assert power.battery_percent == 12.0 and power.charging is True
    write_supply(tmp_path, "BAT1", type="Battery", capacity="90", status="Discharging")
    assert read_power(tmp_path).battery_percent == 12.0  # the lowest battery counts


def test_cpu_share_follows_real_work() -> None:
    sampler = CpuSampler()
    start = time.monotonic()
    first = sampler.sample(start)
    assert first.process == 0.0  # one reading: no share yet
    while time.monotonic() - start < 0.3:  # busy for 0.3 s
        pass
    busy = sampler.sample(time.monotonic())
    time.sleep(0.3)
    idle = sampler.sample(time.monotonic())
    assert busy.process > idle.process  # a loaded machine gives us less than a core,
    assert busy.process > 0.05  # never none; asleep we use next to nothing
    assert busy.system is not None and 0.0 <= busy.system <= 1.0


def test_memory_and_descriptors_of_this_process() -> None:
    memory = read_memory()
    assert memory.process_rss_bytes is not None and memory.process_rss_bytes > 1 << 20
    assert memory.system_used is not None and 0.0 < memory.system_used <= 1.0
    before = read_fds()
    files = [open(os.devnull) for _ in range(20)]  # noqa: SIM115
    try:
        after = read_fds()
        assert after.open >= before.open + 20
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert after.limit == (None if soft == resource.RLIM_INFINITY else soft)
        assert after.used > before.used
    finally:
        for f in files:
            f.close()


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'key_path = "n.key"\nroles = ["mobile-edge", "entry"]\n{extra}')
    return path


def test_device_and_pressure_tables(tmp_path: Path) -> None:
    config = load_node_config(
        _config(
            tmp_path,
            '[device]\npower_supply = "fake-power"\nnetwork_type = "cellular"\nmetered = true\n'
            "relay_opt_in = true\nmin_relay_battery_percent = 40\n"
            "[pressure]\ninterval = 0.2\nhigh_percent = 70\n",
        )
    )
    assert config.device.power_supply == tmp_path / "fake-power"
    assert config.device.network_type == "cellular" and config.device.metered
    assert config.device.relay_opt_in and config.device.min_relay_battery_percent == 40.0
    assert config.pressure.interval == 0.2 and config.pressure.high_percent == 70
    default = load_node_config(_config(tmp_path, ""))
    assert str(default.device.power_supply) == "/sys/class/power_supply"
    assert not default.device.relay_opt_in and default.pressure.high_percent == 80


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[device]\nnetwork_type = "5g"\n', "device.network_type: expected one of"),
        ("[device]\nmetered = 1\n", "device.metered: expected true or false"),
        ("[device]\nbattery = 3\n", "device.battery: unknown key"),
        ("[pressure]\nhigh_percent = 0\n", "pressure.high_percent: expected a percentage"),
        ("[pressure]\ninterval = 0\n", "pressure.interval: expected a number within"),
        ('[nat]\nreflectors = ["a:1"]\n', "nat.reflectors: one is not enough"),
        ('[nat]\nreflectors = ["a:1", "b"]\n', 'nat.reflectors: expected "host:port"'),
        ('[nat]\nlisten = "a:99999"\n', 'nat.listen: expected "host:port"'),
        ("[device]\nsystem_bus = 1\n", "device.system_bus: expected a string"),
    ],
)
def test_device_and_pressure_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(_config(tmp_path, extra))


def _monitor(tmp_path: Path, roles: str, device: str) -> HostMonitor:
    path = tmp_path / "node.toml"
    path.write_text(f'key_path = "n.key"\nroles = {roles}\n[device]\n{device}')
    return HostMonitor(load_node_config(path), list)


def test_relay_gate_and_heartbeat_fields(tmp_path: Path) -> None:
    power = tmp_path / "power"
    write_supply(power, "BAT0", type="Battery", capacity="20", status="Discharging")
    tree = f'power_supply = "{power}"\n'
    # a relay on a laptop: its battery stays out of the heartbeat (the planner would take
    # it for a mobile node), its relay opt-in is its role's
    laptop = _monitor(tmp_path, '["relay"]', tree)
    fields = laptop.heartbeat_fields(True)
    assert "battery_percent" not in fields and fields["relay_opt_in"] is True
    assert laptop.relay_refusal() is None and laptop.status()["battery_percent"] == 20.0
    # a mobile-edge node not opted in, low on battery, metered: each says why
    phone = _monitor(tmp_path, '["mobile-edge", "entry"]', tree)
    assert "not opted in" in str(phone.relay_refusal())
    phone = _monitor(tmp_path, '["mobile-edge", "entry"]', tree + "relay_opt_in = true\n")
    assert "battery 20 % below 30 %" in str(phone.relay_refusal())
    fields = phone.heartbeat_fields(False)
    assert fields["battery_percent"] == 20.0 and fields["relay_opt_in"] is False
    write_supply(power, "BAT0", type="Battery", capacity="20", status="Charging")
    phone.sample(0.0)
    assert phone.relay_refusal() is None and phone.heartbeat_fields(False)["relay_opt_in"]
    metered = _monitor(
        tmp_path, '["mobile-edge", "entry"]', tree + "relay_opt_in = true\nmetered = true\n"
    )
    assert "metered" in str(metered.relay_refusal())
    assert metered.heartbeat_fields(False)["relay_opt_in"] is False
    allowed = _monitor(
        tmp_path,
        '["mobile-edge", "entry"]',
        tree + "relay_opt_in = true\nmetered = true\nallow_metered_relay = true\n",
    )
    assert allowed.relay_refusal() is None


def test_nat_facts_once_probed(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'key_path = "n.key"\n[nat]\nreflectors = ["192.0.2.1:3478", "[2001:db8::1]:3478"]\n'
    )
    config = load_node_config(path)
    assert config.nat.reflectors == (("192.0.2.1", 3478), ("2001:db8::1", 3478))
    monitor = HostMonitor(config, list)
    assert monitor.nat_fields(listening=True) == {}  # not probed: the defaults stand
    assert monitor.status()["nat_type"] == "unknown"
    monitor.nat.report = NatReport("port_restricted", "endpoint-independent", False, "x:1", 2)
    assert monitor.nat_fields(listening=True) == {"nat_type": "port_restricted", "reachable": False}
    monitor.nat.report = NatReport("full_cone", "endpoint-independent", True, "x:1", 2)
    assert monitor.nat_fields(listening=False)["reachable"] is False  # nothing listens
    assert monitor.nat_fields(listening=True)["reachable"] is True


def _never_waits(monitor: HostMonitor, tmp_path: Path) -> None:
    """The monitor's thread reads as never waiting for a CPU (this machine's load aside)."""
    stat = tmp_path / "schedstat"
    stat.write_text("0 0 0\n")
    monitor._run_queue = RunQueueSampler(stat)


def test_loop_lag_counts_as_cpu_pressure(tmp_path: Path) -> None:
    monitor = _monitor(tmp_path, "[]", "")
    _never_waits(monitor, tmp_path)
    monitor.sample(0.0)
    calm = monitor.levels.cpu
    monitor.sample(monitor.settings.loop_lag_budget)  # a loop one budget late: 100 %
    assert monitor.levels.cpu == 100 and calm < 100


def test_a_cpu_reading_is_held_for_a_second(tmp_path: Path) -> None:
    """A throttled node lags in one sample and looks idle in the next: the level holds."""
    path = tmp_path / "node.toml"
    path.write_text('key_path = "n.key"\n')
    now = [100.0]
    monitor = HostMonitor(load_node_config(path), list, clock=lambda: now[0])
    _never_waits(monitor, tmp_path)
    budget = monitor.settings.loop_lag_budget
    now[0] += 0.1
    monitor.sample(budget)  # a loop one budget late: 100 %
    assert monitor.levels.cpu == 100
    now[0] += 0.1
    monitor.sample(0.0)  # on time, 0.1 s later: still held
    assert monitor.levels.cpu == 100
    now[0] += 1.0
    monitor.sample(0.0)  # the lag is more than a second old
    assert monitor.levels.cpu < 100


async def test_foreground_set_by_config_or_admin_socket_gates_mobile_relay(
    tmp_path: Path,
) -> None:
    """Linux reports no foreground state: an app wrapper sets it (config, ``POST /device``);
    with ``relay_requires_foreground`` a background app relays no new stream."""
    opted = 'relay_opt_in = true\nrelay_requires_foreground = true\npower_supply = "none"\n'
    phone = _monitor(tmp_path, '["mobile-edge", "entry"]', opted + "foreground = false\n")
    assert phone.foreground is False and phone.status()["foreground"] is False
    assert "background" in str(phone.relay_refusal())
    assert phone.heartbeat_fields(False)["relay_opt_in"] is False
    changes: list[str | None] = []
    phone.on_relay_change = lambda: changes.append(phone.relay_refusal())
    handle = device_handler(phone)
    response = await handle(make_mocked_request("POST", "/device?foreground=true"))
    assert response.status == 200 and phone.foreground is True
    assert phone.relay_refusal() is None and changes == [None]
    await handle(make_mocked_request("POST", "/device?foreground=false"))
    assert "background" in str(phone.relay_refusal()) and len(changes) == 2
    await handle(make_mocked_request("POST", "/device?foreground=unknown"))
    assert phone.foreground is None and phone.relay_refusal() is None, "not reported: relays"
    bad = await handle(make_mocked_request("POST", "/device?foreground=maybe"))
    assert bad.status == 400 and phone.foreground is None
    # without relay_requires_foreground the state is reported but does not gate
    relaxed = _monitor(
        tmp_path, '["mobile-edge", "entry"]', "relay_opt_in = true\nforeground = false\n"
    )
    assert relaxed.relay_refusal() is None and relaxed.status()["foreground"] is False
    # unset: unknown (the default on Linux)
    assert _monitor(tmp_path, '["relay"]', "").foreground is None


def test_foreground_travels_in_the_heartbeat(tmp_path: Path) -> None:
    """``device.foreground``: true / false as the app wrapper said, null when it said
    nothing; bounded like every fact (a non-boolean is refused)."""
    phone = _monitor(tmp_path, '["mobile-edge"]', 'power_supply = "none"\n')
    for said in (True, False, None):
        phone.set_foreground(said)
        facts = HeartbeatFacts(**phone.heartbeat_fields(False))
        assert facts.foreground is said
        sent = facts.to_json()
        assert sent["device"]["foreground"] is said
        assert parse_facts(sent).foreground is said
    assert parse_facts({"device": {}}).foreground is None  # an older node: not reported
    with pytest.raises(FactsError, match=r"device\.foreground"):
        parse_facts({"device": {"foreground": "yes"}})


def test_run_queue_wait_is_the_waiting_share_of_wall_time(tmp_path: Path) -> None:
    """``schedstat``'s run_delay (ns) per wall second; the first sample is 0; a kernel
    without the file gives None.  The real file of this thread is read too."""
    stat = tmp_path / "schedstat"
    stat.write_text("5000000000 1000000000 40\n")
    sampler = RunQueueSampler(stat)
    assert sampler.sample(10.0) == RunQueueShares(0.0, 0.0)
    stat.write_text("5100000000 1300000000 45\n")  # ran 0.1 s, waited 0.3 s of 0.5 s
    shares = sampler.sample(10.5)
    assert shares is not None
    assert shares.running == pytest.approx(0.2) and shares.waiting == pytest.approx(0.6)
    assert RunQueueSampler(tmp_path / "absent").sample(1.0) is None
    real = RunQueueSampler()
    assert real.sample(time.monotonic()) == RunQueueShares(0.0, 0.0)
    shares = real.sample(time.monotonic() + 0.01)
    assert shares is not None and shares.running >= 0.0 and shares.waiting >= 0.0
    psi = tmp_path / "cpu.pressure"
    psi.write_text("some avg10=12.50 avg60=3.00 avg300=1.00 total=1\n")
    assert read_cpu_psi(psi) == pytest.approx(0.125)
    assert read_cpu_psi(tmp_path / "none") is None


def test_the_cpu_level_is_run_queue_wait_not_own_cpu(tmp_path: Path) -> None:
    """A node's own CPU use is no pressure; waiting for a CPU is (``run_queue_budget``)."""
    path = tmp_path / "node.toml"
    path.write_text('key_path = "n.key"\n[pressure]\nrun_queue_budget = 0.5\n')
    stat = tmp_path / "schedstat"
    stat.write_text("0 0 0\n")
    now = [100.0]
    monitor = HostMonitor(load_node_config(path), list, clock=lambda: now[0])
    monitor._run_queue = RunQueueSampler(stat)
    monitor.sample(0.0)
    monitor._cpu.sample = lambda when: CpuShares(process=1.0, system=1.0)  # type: ignore[method-assign]
    now[0] += 2.0
    stat.write_text("2000000000 100000000 10\n")  # ran the whole time, waited 0.1 s
    monitor.sample(0.0)
    assert monitor.process_cpu == 1.0 and monitor.levels.cpu == 10  # 0.05 / 0.5
    now[0] += 2.0
    stat.write_text("2500000000 1100000000 20\n")  # ran 0.25, waited 0.5 s/s: the budget
    monitor.sample(0.0)
    assert monitor.levels.cpu == 100
    assert monitor.status()["run_queue_wait"] == 0.5
    now[0] += 2.0
    stat.write_text("2600000000 2100000000 30\n")  # as long a wait, little to do (0.05)
    monitor.sample(0.0)
    assert monitor.levels.cpu == 25  # counts by the share of BUSY_SHARE it ran


class _CountingSession:
    """A session's byte counters (what the throughput measure reads), set by the test."""

    def __init__(self, peer: str) -> None:
        self.peer_node_id = peer
        self.bytes_out_by_class = {"reliable": 0, "bulk": 0}
        self.bytes_in_by_class = {"reliable": 0, "bulk": 0}

    def queued_bytes(self) -> int:
        return 0


class _Connection:
    is_closed = False
    is_ready = False

    def __init__(self, session: _CountingSession) -> None:
        self.session = session


def test_peer_throughput_from_the_sessions_byte_counts(tmp_path: Path) -> None:
    """The peak throughput of a peer's session, from its per-class byte counts, reaches
    the heartbeat's peer measurements (``with_bandwidth``)."""
    path = tmp_path / "node.toml"
    path.write_text('key_path = "n.key"\n')
    now = [100.0]
    session = _CountingSession("afn1peer")
    connections = [_Connection(session)]
    monitor = HostMonitor(load_node_config(path), lambda: connections, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    monitor.sample(0.0)
    now[0] += 1.0
    session.bytes_out_by_class["bulk"] = 1_000_000
    session.bytes_in_by_class["reliable"] = 250_000  # 1.25 MB in a second: 10 Mbit/s
    monitor.sample(0.0)
    (peer,) = monitor.with_bandwidth((PeerMeasurement("afn1peer", 5.0),))
    assert peer.bandwidth_mbps == pytest.approx(10.0)
    assert "afn1peer" in monitor.status()["peer_peak_mbps"]
