"""``[[ingress]]``: HTTP (by ``Host``) and HTTPS (by SNI, passed through) listeners that
route each connection to a named fabric service.

```toml
[[ingress]]
listen = "0.0.0.0:80"
protocol = "http"            # or "https": TLS passes through to the service host
traffic_class = "interactive"
hosts = { "admin.example" = "admin-console", "web.example" = "web" }
classes = { "web.example" = "bulk" }   # optional: a host's own class
```

Parsed by :func:`parse_ingress` (``node/config/node_config.py`` calls it); the listener is
:mod:`accessfabric.services.ingress`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from accessfabric.node.dialing.address import HostPort, parse_host_port
from accessfabric.wire.registry import TrafficClass

PROTOCOLS = ("http", "https")
INGRESS_KEYS = (
    "listen",
    "protocol",
    "hosts",
    "classes",
    "traffic_class",
    "header_timeout",
    "max_header_bytes",
    "max_connections",
)
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
MIN_HEADER_BYTES, MAX_HEADER_BYTES = 1024, 64 * 1024
DEFAULT_MAX_CONNECTIONS = 512
MAX_HOSTS = 1024
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class IngressConfigError(ValueError):
    def __init__(self, index: int, key: str, problem: str) -> None:
        self.index = index
        self.key = key
        self.problem = problem
        super().__init__(f"ingress[{index}].{key}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressConfig:
    listen: HostPort
    protocol: str
    hosts: dict[str, str]
    """Host name (lower case, no port) -> fabric service."""
    traffic_class: TrafficClass = TrafficClass.INTERACTIVE
    classes: dict[str, TrafficClass] = field(default_factory=dict)
    """Host name -> the class of its streams, where it is not ``traffic_class``."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """Seconds a client has to send its request head (HTTP) or ClientHello (HTTPS)."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def host_name_ok(name: str) -> bool:
    return bool(_HOST_NAME.match(name))


def _one(index: int, table: Any) -> IngressConfig:
    if not isinstance(table, dict):
        raise IngressConfigError(index, "", "expected a table")
    for key in table:
        if key not in INGRESS_KEYS:
            raise IngressConfigError(
                index, key, f"unknown key (expected one of: {', '.join(INGRESS_KEYS)})"
            )
    for required in ("listen", "protocol", "hosts"):
        if required not in table:
            raise IngressConfigError(index, required, "required")
    try:
        listen = parse_host_port(str(table["listen"]), allow_port_zero=True)
    except ValueError as exc:
        raise IngressConfigError(index, "listen", str(exc)) from None
    protocol = table["protocol"]
    if protocol not in PROTOCOLS:
        raise IngressConfigError(index, "protocol", "must be http or https")
    hosts_table = table["hosts"]
    if not isinstance(hosts_table, dict) or not hosts_table:
        raise IngressConfigError(index, "hosts", "a table of host name = service, not empty")
    if len(hosts_table) > MAX_HOSTS:
        raise IngressConfigError(index, "hosts", f"at most {MAX_HOSTS} names")
    hosts: dict[str, str] = {}
    for name, service in hosts_table.items():
        lowered = str(name).lower().rstrip(".")
        if not host_name_ok(lowered):
            raise IngressConfigError(index, f"hosts.{name}", "not a host name")
        if not isinstance(service, str) or not _SERVICE.match(service):
            raise IngressConfigError(index, f"hosts.{name}", "must name a service")
        hosts[lowered] = service
    traffic_class = TrafficClass.INTERACTIVE
    if "traffic_class" in table:
        try:
            traffic_class = TrafficClass.from_name(str(table["traffic_class"]))
        except ValueError as exc:
            raise IngressConfigError(index, "traffic_class", str(exc)) from None
    classes: dict[str, TrafficClass] = {}
    classes_table = table.get("classes", {})
    if not isinstance(classes_table, dict):
        raise IngressConfigError(index, "classes", "a table of host name = traffic class")
    for name, value in classes_table.items():
        lowered = str(name).lower().rstrip(".")
        if lowered not in hosts:
            raise IngressConfigError(index, f"classes.{name}", "not a name in hosts")
        try:
            classes[lowered] = TrafficClass.from_name(str(value))
        except ValueError as exc:
            raise IngressConfigError(index, f"classes.{name}", str(exc)) from None
    timeout = table.get("header_timeout", DEFAULT_HEADER_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise IngressConfigError(index, "header_timeout", "seconds within (0, 300]")
    size = table.get("max_header_bytes", DEFAULT_MAX_HEADER_BYTES)
    if isinstance(size, bool) or not isinstance(size, int):
        raise IngressConfigError(index, "max_header_bytes", "must be an integer")
    if not MIN_HEADER_BYTES <= size <= MAX_HEADER_BYTES:
        raise IngressConfigError(
            index, "max_header_bytes", f"within {MIN_HEADER_BYTES}..{MAX_HEADER_BYTES}"
        )
    connections = table.get("max_connections", DEFAULT_MAX_CONNECTIONS)
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise IngressConfigError(index, "max_connections", "a positive integer")
    return IngressConfig(
        listen=listen,
        protocol=protocol,
        hosts=hosts,
        traffic_class=traffic_class,
        classes=classes,
        header_timeout=float(timeout),
        max_header_bytes=size,
        max_connections=connections,
    )


def parse_ingress(value: Any) -> tuple[IngressConfig, ...]:
    """The ``[[ingress]]`` list; :class:`IngressConfigError` names the bad entry and key."""
    if not isinstance(value, list):
        raise IngressConfigError(0, "", "expected a list of tables ([[ingress]])")
    return tuple(_one(index, item) for index, item in enumerate(value))
