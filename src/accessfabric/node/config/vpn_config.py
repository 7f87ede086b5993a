"""The ``[vpn]`` config table -> :class:`VpnClassConfig` (documented in ``docs/config.md``).

How the VPN sorts packets into classes (``services/vpn_wire.py`` builds its
``ClassRules`` from this).  Every key is optional.  Errors are :class:`VpnConfigError`
naming the key below ``vpn``; ``config.py`` turns them into its ``ConfigError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from accessfabric.node.config.section_error import SectionConfigError

VPN_KEYS = (
    "dns_ports",
    "interactive_ports",
    "small_packet",
    "small_flow_bytes",
    "heavy_bytes",
    "window",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VpnClassConfig:
    dns_ports: frozenset[int] = frozenset({53})
    interactive_ports: frozenset[int] = frozenset({22, 3389})
    small_packet: int = 256
    small_flow_bytes: int = 16 * 1024
    heavy_bytes: int = 1 << 20
    window: float = 1.0


class VpnConfigError(SectionConfigError):
    """A bad key of ``[vpn]``."""


def _ports(value: Any, key: str) -> frozenset[int]:
    if not isinstance(value, list):
        raise VpnConfigError(key, f"expected a list of ports, got {type(value).__name__}")
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise VpnConfigError(key, f"expected ports 1..65535, got {port!r}")
    return frozenset(value)


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise VpnConfigError(key, f"expected an integer {low}..{high}, got {value!r}")
    return value


def vpn_class_config(value: Any) -> VpnClassConfig:
    if not isinstance(value, dict):
        raise VpnConfigError("", f"expected a table, got {type(value).__name__}")
    unknown = sorted(set(value) - set(VPN_KEYS))
    if unknown:
        raise VpnConfigError(unknown[0], f"unknown key (expected one of: {', '.join(VPN_KEYS)})")
    fields: dict[str, Any] = {}
    for key in ("dns_ports", "interactive_ports"):
        if key in value:
            fields[key] = _ports(value[key], key)
    if "small_packet" in value:
        fields["small_packet"] = _int(value["small_packet"], "small_packet", 0, 65535)
    if "small_flow_bytes" in value:
        fields["small_flow_bytes"] = _int(value["small_flow_bytes"], "small_flow_bytes", 0, 1 << 30)
    if "heavy_bytes" in value:
        fields["heavy_bytes"] = _int(value["heavy_bytes"], "heavy_bytes", 1, 1 << 40)
    if "window" in value:
        window = value["window"]
        if (
            isinstance(window, bool)
            or not isinstance(window, (int, float))
            or not math.isfinite(window)
            or not 0.01 <= window <= 60
        ):
            raise VpnConfigError("window", f"expected seconds 0.01..60, got {window!r}")
        fields["window"] = float(window)
    return VpnClassConfig(**fields)
