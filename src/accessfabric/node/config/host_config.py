"""``[device]`` and ``[pressure]``: what the node is told about its machine and its limits.

``[device]`` says what the node cannot measure itself (network type, metered — unless
NetworkManager answers on D-Bus, ``network_manager``) and what
its owner decided (relay opt-in of a ``mobile-edge`` node, battery floor); where battery
and charging are read (``power_supply``, a ``/sys/class/power_supply`` tree) is
configurable so tests can use a fake tree.  ``[pressure]`` says when the node's own
measurements count as pressure (NODE_PRESSURE to its peers).  docs/config.md lists the
keys; docs/control.md says where each heartbeat fact is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETWORK_TYPES = ("wired", "wifi", "cellular", "satellite", "unknown")
DEFAULT_POWER_SUPPLY = Path("/sys/class/power_supply")
DEVICE_KEYS = (
    "power_supply",
    "network_type",
    "metered",
    "relay_opt_in",
    "min_relay_battery_percent",
    "allow_metered_relay",
    "foreground",
    "relay_requires_foreground",
    "network_manager",
    "system_bus",
    "network_manager_interval",
)
PRESSURE_KEYS = ("interval", "high_percent", "loop_lag_budget", "run_queue_budget")
NAT_KEYS = ("reflectors", "listen", "interval", "timeout")
MAX_REFLECTORS = 8


class HostConfigError(ValueError):
    """``str(error)`` is ``"<key>: <problem>"``; config.py adds the source."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    power_supply: Path = DEFAULT_POWER_SUPPLY
    """Where battery and charging are read (a ``/sys/class/power_supply`` tree)."""
    network_type: str = "unknown"
    metered: bool = False
    relay_opt_in: bool = False
    """The owner of a ``mobile-edge`` node agreed to relay other nodes' traffic."""
    min_relay_battery_percent: float = 30.0
    """A mobile-edge node not charging relays only at or above this battery level."""
    allow_metered_relay: bool = False
    """A mobile-edge node on a metered network relays only when this is true."""
    foreground: bool | None = None
    """Whether the app this node runs in is in the foreground; None: not reported (Linux has
    no such state).  An app wrapper sets it here or on the admin socket (``POST /device``)."""
    relay_requires_foreground: bool = False
    """A mobile-edge node whose ``foreground`` is false relays no new stream."""
    network_manager: bool = True
    """Ask NetworkManager (D-Bus) for network type and metered; the keys above are the
    fallback when it does not answer (``node/host/network_manager.py``)."""
    system_bus: str = ""
    """The D-Bus address NetworkManager is asked on; empty: ``$DBUS_SYSTEM_BUS_ADDRESS``
    or ``unix:path=/run/dbus/system_bus_socket``."""
    network_manager_interval: float = 5.0
    """Seconds between two questions to NetworkManager."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureConfig:
    interval: float = 1.0
    """Seconds between two samples of the machine."""
    high_percent: int = 80
    """A level (cpu, memory, fds, queue) at or above this is pressure: NODE_PRESSURE is sent."""
    loop_lag_budget: float = 0.5
    """Event-loop lag (seconds) that counts as 100 % cpu pressure."""
    run_queue_budget: float = 0.5
    """Run-queue wait of the event loop's thread (seconds per second: runnable, not
    running) that counts as 100 % cpu pressure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NatConfig:
    reflectors: tuple[tuple[str, int], ...] = ()
    """Reflectors (``host:port``) on two or more different entries: the NAT probe's far
    sides (``node/dialing/nat_probe.py``); none: no probe, ``nat.type`` stays ``unknown``."""
    listen: tuple[str, int] | None = None
    """Where this node (an entry) answers other nodes' NAT probes (UDP)."""
    interval: float = 300.0
    """Seconds between two probes (and one after an address change)."""
    timeout: float = 1.0
    """Seconds one probe question waits for its answer (three tries in that time)."""


def _host_port(value: Any, key: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise HostConfigError(f'{key}: expected "host:port", got {value!r}')
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HostConfigError(f'{key}: expected "host:port", got {value!r}')
    return host, int(port)


def parse_nat(table: dict[str, Any], base: Path) -> NatConfig:
    _unknown(table, NAT_KEYS)
    reflectors = table.get("reflectors", [])
    if not isinstance(reflectors, list) or len(reflectors) > MAX_REFLECTORS:
        raise HostConfigError(f"reflectors: expected a list of at most {MAX_REFLECTORS}")
    if len(reflectors) == 1:
        raise HostConfigError(
            "reflectors: one is not enough: the mapping is told by comparing two entries"
        )
    listen = table.get("listen")
    return NatConfig(
        reflectors=tuple(_host_port(r, "reflectors") for r in reflectors),
        listen=None if listen is None else _host_port(listen, "listen"),
        interval=_number(table, "interval", 300.0, 1.0, 86400.0),
        timeout=_number(table, "timeout", 1.0, 0.05, 30.0),
    )


def _bool(table: dict[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise HostConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _number(table: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise HostConfigError(f"{key}: expected a number within {low:g}..{high:g}, got {value!r}")
    return float(value)


def _string(table: dict[str, Any], key: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or len(value) > 1024:
        raise HostConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _unknown(table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise HostConfigError(f"{key}: unknown key (known: {', '.join(allowed)})")


def parse_device(table: dict[str, Any], base: Path) -> DeviceConfig:
    _unknown(table, DEVICE_KEYS)
    network_type = table.get("network_type", "unknown")
    if network_type not in NETWORK_TYPES:
        raise HostConfigError(
            f"network_type: expected one of {', '.join(NETWORK_TYPES)}, got {network_type!r}"
        )
    power_supply = table.get("power_supply", str(DEFAULT_POWER_SUPPLY))
    if not isinstance(power_supply, str) or not power_supply:
        raise HostConfigError(f"power_supply: expected a path, got {power_supply!r}")
    return DeviceConfig(
        power_supply=base / power_supply,
        network_type=network_type,
        metered=_bool(table, "metered", False),
        relay_opt_in=_bool(table, "relay_opt_in", False),
        min_relay_battery_percent=_number(table, "min_relay_battery_percent", 30.0, 0.0, 100.0),
        allow_metered_relay=_bool(table, "allow_metered_relay", False),
        foreground=_bool(table, "foreground", False) if "foreground" in table else None,
        relay_requires_foreground=_bool(table, "relay_requires_foreground", False),
        network_manager=_bool(table, "network_manager", True),
        system_bus=_string(table, "system_bus"),
        network_manager_interval=_number(table, "network_manager_interval", 5.0, 0.1, 600.0),
    )


def parse_pressure(table: dict[str, Any]) -> PressureConfig:
    _unknown(table, PRESSURE_KEYS)
    high = table.get("high_percent", 80)
    if isinstance(high, bool) or not isinstance(high, int) or not 1 <= high <= 100:
        raise HostConfigError(f"high_percent: expected a percentage 1..100, got {high!r}")
    return PressureConfig(
        interval=_number(table, "interval", 1.0, 0.05, 60.0),
        high_percent=high,
        loop_lag_budget=_number(table, "loop_lag_budget", 0.5, 0.01, 60.0),
        run_queue_budget=_number(table, "run_queue_budget", 0.5, 0.01, 1.0),
    )
