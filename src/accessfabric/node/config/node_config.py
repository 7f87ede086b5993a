"""``NodeConfig``: what a node runs with, from a TOML file plus ``ACCESSFABRIC_*`` variables.

This module is the one place configuration is read.  Every error is a
:class:`ConfigError` whose message names the source (the file as given, or
``environment``), the key and the problem, e.g.
``node.toml: peers[1].node_id: node id checksum mismatch ...``.  The keys are
documented in ``docs/config.md``.

Environment overrides replace the file's value (lists are replaced whole):

* ``ACCESSFABRIC_<KEY>`` for a top-level key (``ACCESSFABRIC_KEY_PATH``,
  ``ACCESSFABRIC_CERT_DIR``, ``ACCESSFABRIC_ROLES=relay,exit``,
  ``ACCESSFABRIC_DRAIN_TIMEOUT``, ``ACCESSFABRIC_LOG_JSON``, ``ACCESSFABRIC_TCP_RTO_MIN``);
* ``ACCESSFABRIC_LISTEN=tcp://127.0.0.1:7443,wss://0.0.0.0:8443/fabric``;
* ``ACCESSFABRIC_SESSION_<KEY>`` for a key of ``[session]``.

Tables and lists (``[[peers]]``, ``[[services]]``, ``[[forwards]]``, ``[control]``, ``[ranking]``,
``[sealing]``, ``[routes]``, ``[limits]``, ``[allow]``) and a few keys come from the file only
(docs/config.md lists them).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN, MAX_RTO_MIN
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.identity.node_id import parse_node_id
from accessfabric.node.config.host_config import (
    DeviceConfig,
    HostConfigError,
    NatConfig,
    PressureConfig,
    parse_device,
    parse_nat,
    parse_pressure,
)
from accessfabric.node.config.ingress_config import IngressConfig, IngressConfigError, parse_ingress
from accessfabric.node.config.limits_config import admission_limits
from accessfabric.node.config.ranking_config import ranking_policy
from accessfabric.node.config.section_error import SectionConfigError
from accessfabric.node.config.vpn_config import VpnClassConfig, vpn_class_config
from accessfabric.node.dialing.address import (
    CARRIERS,
    DEFAULT_PATHS,
    Endpoint,
    HostPort,
    parse_endpoint_url,
    parse_host_port,
    validate_websocket_path,
)
from accessfabric.node.dialing.ranking.policy import RankingPolicy
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.sealing.records import CipherSuite
from accessfabric.session.config import SessionConfig
from accessfabric.wire.limits import MAX_FRAME_SIZE_CAP, MAX_SERVICE_NAME, MIN_MAX_FRAME_SIZE
from accessfabric.wire.registry import TrafficClass

ENV_PREFIX = "ACCESSFABRIC_"
ROLES = tuple(role.value for role in Role)
"""The role names ``roles`` accepts (the node record's vocabulary)."""
PEER_CONNECT_MODES = ("on-demand", "always")
SEALING_CIPHERS = ("auto", *(suite.label for suite in CipherSuite))
"""``[sealing] cipher``: ``auto`` (AES-256-GCM where the CPU has AES instructions, else
ChaCha20-Poly1305) or one suite by name."""
SERVICE_MODES = ("forward", "active-active", "leader-follower")
RESERVED_SERVICES = ("echo",)
DEFAULT_DRAIN_TIMEOUT = 10.0
MAX_CONFIG_FILE_SIZE = 1024 * 1024

_INT_LIMITS = {
    "max_frame_size": (MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CAP),
    "initial_stream_window": (1, 1 << 62),
    "max_stream_window": (1, 1 << 62),
    "initial_session_window": (1, 1 << 62),
    "max_session_window": (1, 1 << 62),
    "stream_window_budget": (0, 1 << 62),
    "urgent_session_reserve": (0, 1 << 62),
    "max_concurrent_streams": (1, (1 << 31) - 1),
    "max_stream_send_buffer": (1, 1 << 62),
}
_OPTIONAL_INTS = {"pressure_min_rate": (1024, 1 << 40), "interactive_in_flight": (1, 1 << 62)}
"""Integer keys that ``false`` turns off."""
_OPTIONAL_SECONDS = (
    "handshake_timeout",
    "keepalive_interval",
    "ping_timeout",
    "idle_timeout",
    "pacing_target_delay",
)
SESSION_KEYS = (*_INT_LIMITS, *_OPTIONAL_INTS, *_OPTIONAL_SECONDS)
"""The ``[session]`` keys: SessionConfig fields an operator may set."""


class ConfigError(Exception):
    """A configuration problem: ``str(error)`` is ``"<source>: <key>: <problem>"``."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    """A static peer: its expected node id and the endpoints to try, in order."""

    node_id: str
    endpoints: tuple[Endpoint, ...]
    name: str = ""
    connect: str = "on-demand"
    """``on-demand``: dial when something needs the peer; ``always``: keep a session up."""
    services: tuple[str, ...] = ()
    """Services this peer hosts: streams to them go to this peer (no route lease needed)."""
    sealing_key: bytes | None = None
    """The peer's X25519 sealing public key (``accessfabric node id --sealing-key``), for
    sealed streams to or from it without a control plane directory (docs/sealing.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SealingConfig:
    """``[sealing]``: which routed streams are sealed end to end, and static sealing keys."""

    one_hop: bool = True
    """Seal streams on one-hop routes too (relayed ones always are)."""
    cipher: str = "auto"
    """The AEAD of the streams this node opens (one of :data:`SEALING_CIPHERS`); a
    destination accepts every suite (docs/sealing.md)."""
    keys: Mapping[str, bytes] = field(default_factory=dict)
    """``[sealing.keys]``: node id -> X25519 sealing public key (32 raw bytes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """A service this node hosts (parsed and validated now; served by the services layer)."""

    name: str
    target: HostPort
    traffic_class: TrafficClass = TrafficClass.RELIABLE
    mode: str = "forward"
    allow: tuple[str, ...] = ()
    """Node ids that may open streams to it without a control plane grant (``*``: any
    node); empty: only those a grant admits (nobody, without a control plane)."""


WELL_KNOWN_CLASSES = {
    "rdp": TrafficClass.INTERACTIVE,
    "ssh": TrafficClass.INTERACTIVE,
    "dns": TrafficClass.DNS,
}
"""The class a forward uses when neither the config nor the command line names one."""


def default_class(service: str) -> TrafficClass:
    return WELL_KNOWN_CLASSES.get(service, TrafficClass.RELIABLE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardConfig:
    """A local TCP listener whose connections become streams to ``service``."""

    listen: HostPort
    service: str
    traffic_class: TrafficClass | None = None
    """None: the service's well-known class (rdp, ssh: interactive; others: reliable)."""


ROUTES_KEYS = (
    "stall_timeout",
    "interactive_stall_timeout",
    "resume_window",
    "pressure_threshold",
    "cooldown",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTimers:
    """``[routes]``: when route execution leaves a route and how long a stream may resume
    (``node/routing/routes.py``; docs/config.md explains each and how they interact)."""

    stall_timeout: float = 3.0
    """Unacknowledged bytes and no end-to-end ACK progress for this long: the route failed."""
    interactive_stall_timeout: float = 1.0
    """The same, for interactive streams whose route has a healthy alternate: dead-path
    detection from missing ACKs sooner for that class (never below 4 x the first hop's
    smoothed RTT, never above ``stall_timeout``)."""
    resume_window: float = 30.0
    """How long a broken stream may resume (at the source: find a route; at the
    destination and relays: hold the stream's state for a resume)."""
    pressure_threshold: int = 90
    """A first hop reporting NODE_PRESSURE at or above this percentage fails the route."""
    cooldown: float = 10.0
    """A failed route ranks below healthy ones for this long (still tried when no route is
    healthy)."""


DEFAULT_CONTROL_URL = "https://127.0.0.1:8600"
CONTROL_KEYS = (
    "url",
    "urls",
    "authority_key",
    "token",
    "state_dir",
    "heartbeat_interval",
    "backoff_max",
)
DEFAULT_CONTROL_BACKOFF_MAX = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSettings:
    """``[control]``: the control plane this node enrolls with and heartbeats to."""

    url: str = DEFAULT_CONTROL_URL
    urls: tuple[str, ...] = ()
    """Every control replica (``urls = [...]``); empty: just ``url``.  ``url`` is the first."""
    authority_key: bytes
    """The control plane's public key (``afauth1...``): every signed object is checked."""
    token: str | None = None
    """Enrollment token: used only while no node record is cached in ``state_dir``."""
    state_dir: Path
    """The control client's cache (node record, policy, directory, leases)."""
    heartbeat_interval: float | None = None
    """Seconds between heartbeats; None: the control plane's policy (default 10 s)."""
    backoff_max: float = DEFAULT_CONTROL_BACKOFF_MAX
    """The longest wait between attempts while the control plane is unreachable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Everything ``accessfabric node run`` needs; defaults work for all but ``key_path``."""

    key_path: Path
    cert_dir: Path
    roles: tuple[str, ...] = ()
    listen: tuple[Endpoint, ...] = ()
    peers: tuple[PeerConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    forwards: tuple[ForwardConfig, ...] = ()
    ingress: tuple[IngressConfig, ...] = ()
    """``[[ingress]]``: HTTP/HTTPS listeners routing by host name
    (node/config/ingress_config.py)."""
    metrics_listen: HostPort | None = None
    """Where ``/metrics`` is served (Prometheus text); None: not served."""
    admin_socket: Path | None = None
    """The unix socket ``accessfabric status`` asks (mode 0600); default next to the key."""
    session: SessionConfig = field(default_factory=SessionConfig)
    ranking: RankingPolicy = field(default_factory=RankingPolicy)
    """Endpoint ranking for peer dials (``[ranking]``, ``node/config/ranking_config.py``)."""
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    log_json: bool = False
    tcp_rto_min: float | None = DEFAULT_RTO_MIN
    """Minimum TCP retransmission timeout of TCP and WebSocket carriers (seconds, at most
    0.2); None: the kernel's (200 ms).  ``docs/adr/0011-tcp-minimum-rto.md``."""
    authority_key: bytes | None = None
    """The control plane's public key (``afauth1...``): route leases are checked with it."""
    control: ControlSettings | None = None
    """``[control]``: None runs without a control plane (static peers and routes)."""
    sealing: SealingConfig = field(default_factory=SealingConfig)
    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """``[allow]``: service -> node ids (or ``*``) that may open it, for services not in
    ``[[services]]`` (the built-in ``echo``, ``vpn``); docs/config.md, Access."""
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    """``[limits]``: what an outsider may cost before and after AUTH (docs/node.md)."""
    routes: RouteTimers = field(default_factory=RouteTimers)
    """``[routes]``: route-execution timers (stall, resume window, pressure, cooldown)."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    """``[device]``: power supply, network type, metered, mobile relay opt-in (host_config)."""
    pressure: PressureConfig = field(default_factory=PressureConfig)
    """``[pressure]``: when measurements count as pressure (NODE_PRESSURE to peers)."""
    nat: NatConfig = field(default_factory=NatConfig)
    """``[nat]``: the NAT probe's reflectors, and this node's own reflector (host_config)."""
    vpn: VpnClassConfig = field(default_factory=VpnClassConfig)
    """``[vpn]``: how ``vpn up`` sorts packets into classes (``node/config/vpn_config.py``)."""
    source: str = ""
    """Where the config came from (the file as given, or ``environment``)."""
    name: str = ""
    """A label for people (``name = "laptop"``): shown in ``status`` and the start-up logs."""

    def peer_names(self) -> dict[str, str]:
        """Node id -> the ``[[peers]] name`` given to it (only the named ones)."""
        return {peer.node_id: peer.name for peer in self.peers if peer.name}

    def allow_lists(self) -> dict[str, tuple[str, ...]]:
        """Every static allow list: ``[allow]`` and each ``[[services]] allow``."""
        lists = dict(self.allow)
        for service in self.services:
            if service.allow:
                lists[service.name] = service.allow
        return lists

    def peer(self, node_id: str) -> PeerConfig | None:
        for peer in self.peers:
            if peer.node_id == node_id:
                return peer
        return None


# ---------------------------------------------------------------------------- loading


def load_node_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Read ``path`` (TOML; None: no file), apply ``ACCESSFABRIC_*`` overrides, validate."""
    env = os.environ if environ is None else environ
    if path is None:
        source, base, document = "environment", Path.cwd(), {}
    else:
        source, base = os.fspath(path), Path(path).parent
        document = _read_toml(Path(path), source)
    return _build(document, source, base, env)


def _read_toml(path: Path, source: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_FILE_SIZE + 1)
    except FileNotFoundError:
        raise ConfigError(source, "", "config file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read config file: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_FILE_SIZE:
        raise ConfigError(source, "", "config file is larger than 1 MiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "", "config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None


class _At:
    """Where a value came from, for error messages."""

    def __init__(self, source: str, key: str = "") -> None:
        self.source = source
        self.key = key

    def __truediv__(self, name: str) -> _At:
        return _At(self.source, f"{self.key}.{name}" if self.key else name)

    def __getitem__(self, index: int) -> _At:
        return _At(self.source, f"{self.key}[{index}]")

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(self.source, self.key, problem)


_T = TypeVar("_T")
_C = TypeVar("_C", TrafficClass, None)

_TOP_KEYS = (
    "authority_key",
    "key_path",
    "cert_dir",
    "roles",
    "listen",
    "peers",
    "services",
    "forwards",
    "ingress",
    "metrics_listen",
    "admin_socket",
    "session",
    "ranking",
    "drain_timeout",
    "log_json",
    "tcp_rto_min",
    "control",
    "sealing",
    "allow",
    "limits",
    "name",
    "routes",
    "device",
    "pressure",
    "nat",
    "vpn",
)
SEALING_KEYS = ("one_hop", "cipher", "keys")


def _build(document: dict[str, Any], source: str, base: Path, env: Mapping[str, str]) -> NodeConfig:
    top = _At(source)
    _check_keys(document, top, _TOP_KEYS)
    key_path = _opt(document, "key_path", top, lambda v, at: _path(v, at, base))
    cert_dir = _opt(document, "cert_dir", top, lambda v, at: _path(v, at, base))
    roles = _opt(document, "roles", top, _roles) or ()
    listen = _opt(document, "listen", top, _listen_tables) or ()
    peers = _opt(document, "peers", top, _peers) or ()
    services = _opt(document, "services", top, _services) or ()
    forwards = _opt(document, "forwards", top, _forwards) or ()
    ingress = _opt(document, "ingress", top, _ingress) or ()
    metrics_listen = _opt(document, "metrics_listen", top, _host_port)
    admin_socket = _opt(document, "admin_socket", top, lambda v, at: _path(v, at, base))
    drain_timeout = _opt(document, "drain_timeout", top, _positive_seconds)
    log_json = _opt(document, "log_json", top, _bool)
    node_name = _opt(document, "name", top, _str) or ""
    tcp_rto_min = _opt(document, "tcp_rto_min", top, _rto_min)
    authority_key = _opt(document, "authority_key", top, _authority_key)
    session_table = _opt(document, "session", top, _table) or {}
    control_table = _opt(document, "control", top, _table)
    ranking = _opt(document, "ranking", top, _section(ranking_policy)) or RankingPolicy()
    sealing = _opt(document, "sealing", top, _sealing) or SealingConfig()
    allow = _opt(document, "allow", top, _allow_table) or {}
    for name in allow:
        if any(service.name == name for service in services):
            (top / "allow" / name).fail(
                f"service {name!r} is in [[services]]: give its allow list there"
            )
    limits = _opt(document, "limits", top, _section(admission_limits)) or AdmissionLimits()
    routes = _opt(document, "routes", top, _routes) or RouteTimers()
    device = _opt(document, "device", top, lambda v, at: _host(v, at, base, parse_device))
    pressure = _opt(document, "pressure", top, lambda v, at: _host(v, at, base, _pressure))
    nat = _opt(document, "nat", top, lambda v, at: _host(v, at, base, parse_nat))
    vpn = _opt(document, "vpn", top, _section(vpn_class_config)) or VpnClassConfig()
    session_at = top / "session"
    _check_keys(session_table, session_at, SESSION_KEYS)
    session_values: dict[str, Any] = {
        k: _session_value(k, v, session_at / k) for k, v in session_table.items()
    }

    # Environment overrides: the same parsers, errors name the variable.
    def env_value(name: str, parse: Callable[[str, _At], _T]) -> _T | None:
        variable = ENV_PREFIX + name.upper()
        raw = env.get(variable)
        return None if raw is None else parse(raw, _At("environment", variable))

    cwd = Path.cwd()
    key_path = env_value("key_path", lambda v, at: _path(v, at, cwd)) or key_path
    cert_dir = env_value("cert_dir", lambda v, at: _path(v, at, cwd)) or cert_dir
    env_roles = env_value("roles", lambda v, at: _roles(_split(v), at))
    roles = roles if env_roles is None else env_roles
    env_listen = env_value("listen", _listen_urls)
    listen = listen if env_listen is None else env_listen
    env_drain = env_value("drain_timeout", lambda v, at: _positive_seconds(_number(v, at), at))
    drain_timeout = drain_timeout if env_drain is None else env_drain
    metrics_listen = env_value("metrics_listen", _host_port) or metrics_listen
    env_log_json = env_value("log_json", _bool_text)
    log_json = log_json if env_log_json is None else env_log_json
    env_rto_min = env_value("tcp_rto_min", lambda v, at: _rto_min(_rto_min_text(v, at), at))
    tcp_rto_min = tcp_rto_min if env_rto_min is None else env_rto_min
    for name in SESSION_KEYS:
        variable = f"{ENV_PREFIX}SESSION_{name.upper()}"
        if variable in env:
            at = _At("environment", variable)
            session_values[name] = _session_value(name, _session_text(name, env[variable], at), at)

    if key_path is None:
        where = "environment" if source == "environment" else source
        raise ConfigError(
            where, "key_path", "required (the node's key file; set ACCESSFABRIC_KEY_PATH)"
        )
    try:
        session = dataclasses.replace(SessionConfig(), **session_values)
    except TypeError as exc:  # pragma: no cover - keys are checked above
        raise ConfigError(source, "session", str(exc)) from None
    _check_windows(session, session_at)
    control = None
    if control_table is not None:
        control = _control(control_table, top / "control", base, authority_key, key_path)
        authority_key = authority_key or control.authority_key
    return NodeConfig(
        key_path=key_path,
        cert_dir=cert_dir or key_path.parent / "tls",
        roles=roles,
        listen=listen,
        peers=peers,
        services=services,
        forwards=forwards,
        ingress=ingress,
        metrics_listen=metrics_listen,
        admin_socket=admin_socket or key_path.parent / (key_path.stem + ".admin.sock"),
        session=session,
        ranking=ranking,
        drain_timeout=DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout,
        log_json=bool(log_json),
        name=node_name,
        # Absent: the default; false (parsed as 0.0): None, the kernel's own.
        tcp_rto_min=DEFAULT_RTO_MIN if tcp_rto_min is None else tcp_rto_min or None,
        authority_key=authority_key,
        control=control,
        sealing=sealing,
        allow=allow,
        limits=limits,
        routes=routes,
        device=device or DeviceConfig(),
        pressure=pressure or PressureConfig(),
        nat=nat or NatConfig(),
        vpn=vpn,
        source=source,
    )


# ---------------------------------------------------------------------------- value parsers


def _opt(
    table: Mapping[str, Any], name: str, at: _At, parse: Callable[[Any, _At], _T]
) -> _T | None:
    return parse(table[name], at / name) if name in table else None


def _check_keys(table: Mapping[str, Any], at: _At, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            (at / key).fail(f"unknown key (expected one of: {', '.join(allowed)})")


def _table(value: Any, at: _At) -> dict[str, Any]:
    if not isinstance(value, dict):
        at.fail(f"expected a table, got {_kind(value)}")
    return value


def _list(value: Any, at: _At) -> list[Any]:
    if not isinstance(value, list):
        at.fail(f"expected a list, got {_kind(value)}")
    return value


def _str(value: Any, at: _At) -> str:
    if not isinstance(value, str):
        at.fail(f"expected a string, got {_kind(value)}")
    if not value.strip():
        at.fail("must not be empty")
    return value.strip()


def _bool(value: Any, at: _At) -> bool:
    if not isinstance(value, bool):
        at.fail(f"expected true or false, got {_kind(value)}")
    return value


def _bool_text(text: str, at: _At) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    at.fail(f"expected true/false (1/0, yes/no), got {text!r}")


def _number(text: str, at: _At) -> float:
    try:
        return float(text)
    except ValueError:
        at.fail(f"expected a number, got {text!r}")


def _path(value: Any, at: _At, base: Path) -> Path:
    path = Path(os.path.expanduser(_str(value, at)))
    return path if path.is_absolute() else base / path


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _authority_key(value: Any, at: _At) -> bytes:
    from accessfabric.control.kernel.authority_key import parse_authority_key

    try:
        return parse_authority_key(_str(value, at))
    except ValueError as exc:
        at.fail(str(exc))


def _positive_seconds(value: Any, at: _At) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        at.fail(f"expected a number of seconds, got {_kind(value)}")
    if not 0 < value < 1e9:
        at.fail(f"must be a positive number of seconds, got {value}")
    return float(value)


def _rto_min(value: Any, at: _At) -> float:
    """Seconds in (0, 0.2], or ``0.0`` for ``false`` (the kernel's minimum RTO)."""
    if value is False:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        at.fail(f"expected a number of seconds or false (the kernel's 200 ms), got {_kind(value)}")
    if not 0 < value <= MAX_RTO_MIN:
        at.fail(f"must be more than 0 and at most {MAX_RTO_MIN} seconds (or false), got {value}")
    return float(value)


def _rto_min_text(text: str, at: _At) -> Any:
    stripped = text.strip()
    return False if stripped.lower() in ("false", "off", "none") else _number(stripped, at)


def _control_url(value: Any, at: _At) -> str:
    url = _str(value, at).rstrip("/")
    if not url.startswith(("http://", "https://")) or url[-3:] == "://":
        at.fail(f"expected an http:// or https:// URL, got {url!r}")
    return url


def _control(
    table: dict[str, Any], at: _At, base: Path, top_key: bytes | None, key_path: Path
) -> ControlSettings:
    _check_keys(table, at, CONTROL_KEYS)
    url = DEFAULT_CONTROL_URL
    if "url" in table:
        url = _control_url(table["url"], at / "url")
    urls: tuple[str, ...] = ()
    if "urls" in table:
        if "url" in table:
            (at / "urls").fail("give either url or urls, not both")
        items = _list(table["urls"], at / "urls")
        urls = tuple(_control_url(item, (at / "urls")[i]) for i, item in enumerate(items))
        if not urls:
            (at / "urls").fail("needs at least one control plane URL")
        if len(set(urls)) != len(urls):
            (at / "urls").fail("lists a URL twice")
        url = urls[0]
    key = _opt(table, "authority_key", at, _authority_key)
    if key is None:
        if top_key is None:
            (at / "authority_key").fail(
                "required (the control plane's afauth1... key; or the top-level authority_key)"
            )
        key = top_key
    elif top_key is not None and key != top_key:
        (at / "authority_key").fail("differs from the top-level authority_key")
    token = _str(table["token"], at / "token") if "token" in table else None
    state_dir = _opt(table, "state_dir", at, lambda v, a: _path(v, a, base))
    interval = _opt(table, "heartbeat_interval", at, _positive_seconds)
    backoff_max = _opt(table, "backoff_max", at, _positive_seconds)
    return ControlSettings(
        url=url,
        urls=urls,
        authority_key=key,
        token=token,
        state_dir=state_dir or key_path.parent / (key_path.stem + ".control"),
        heartbeat_interval=interval,
        backoff_max=DEFAULT_CONTROL_BACKOFF_MAX if backoff_max is None else backoff_max,
    )


def _pressure(table: dict[str, Any], base: Path) -> PressureConfig:
    return parse_pressure(table)


def _host(value: Any, at: _At, base: Path, parse: Callable[[dict[str, Any], Path], _T]) -> _T:
    """``[device]`` / ``[pressure]`` / ``[nat]`` (node/config/host_config.py), errors naming
    the key."""
    table = _table(value, at)
    try:
        return parse(table, base)
    except HostConfigError as error:
        key, _, problem = str(error).partition(": ")
        (at / key).fail(problem)


def _routes(value: Any, at: _At) -> RouteTimers:
    table = _table(value, at)
    _check_keys(table, at, ROUTES_KEYS)
    values: dict[str, Any] = {}
    for name in ROUTES_KEYS:
        if name not in table:
            continue
        if name == "pressure_threshold":
            level = table[name]
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 100:
                (at / name).fail(f"expected a percentage 1..100, got {level!r}")
            values[name] = level
        else:
            values[name] = _positive_seconds(table[name], at / name)
    return RouteTimers(**values)


def _roles(value: Any, at: _At) -> tuple[str, ...]:
    roles: list[str] = []
    for index, item in enumerate(_list(value, at)):
        role = _str(item, at[index]).lower()
        if role not in ROLES:
            at[index].fail(f"unknown role {role!r} (choose from {', '.join(ROLES)})")
        if role in roles:
            at[index].fail(f"role {role!r} listed twice")
        roles.append(role)
    return tuple(roles)


def _listen_tables(value: Any, at: _At) -> tuple[Endpoint, ...]:
    endpoints = []
    for index, item in enumerate(_list(value, at)):
        item_at = at[index]
        table = _table(item, item_at)
        _check_keys(table, item_at, ("carrier", "address", "path", "behind_proxy", "tls"))
        if "carrier" not in table:
            (item_at / "carrier").fail(f"required ({' or '.join(repr(c) for c in CARRIERS)})")
        if "address" not in table:
            (item_at / "address").fail("required ('host:port'; port 0 picks a free port)")
        carrier = _str(table["carrier"], item_at / "carrier").lower()
        if carrier not in CARRIERS:
            (item_at / "carrier").fail(
                f"unknown carrier {carrier!r} (choose from {', '.join(CARRIERS)})"
            )
        try:
            where = parse_host_port(
                _str(table["address"], item_at / "address"), allow_port_zero=True
            )
        except ValueError as exc:
            (item_at / "address").fail(str(exc))
        path = ""
        if "path" in table:
            if carrier not in DEFAULT_PATHS:
                (item_at / "path").fail("only a websocket or https listener has a path")
            try:
                path = validate_websocket_path(_str(table["path"], item_at / "path"))
            except ValueError as exc:
                (item_at / "path").fail(str(exc))
        else:
            path = DEFAULT_PATHS.get(carrier, "")
        behind_proxy = _bool(table.get("behind_proxy", False), item_at / "behind_proxy")
        tls = _bool(table.get("tls", True), item_at / "tls")
        if behind_proxy and carrier != "websocket":
            (item_at / "behind_proxy").fail("only a websocket listener can be behind a proxy")
        if not tls and not behind_proxy:
            (item_at / "tls").fail("false only with behind_proxy = true (ADR 0005)")
        endpoints.append(
            Endpoint(
                carrier=carrier, host=where.host, port=where.port, path=path,
                behind_proxy=behind_proxy, tls=tls,
            )
        )  # fmt: skip
    return tuple(endpoints)


def _listen_urls(text: str, at: _At) -> tuple[Endpoint, ...]:
    try:
        return tuple(parse_endpoint_url(url, allow_port_zero=True) for url in _split(text))
    except ValueError as exc:
        at.fail(str(exc))


def _peers(value: Any, at: _At) -> tuple[PeerConfig, ...]:
    peers: list[PeerConfig] = []
    for index, item in enumerate(_list(value, at)):
        item_at = at[index]
        table = _table(item, item_at)
        _check_keys(
            table, item_at, ("node_id", "endpoints", "name", "connect", "services", "sealing_key")
        )
        if "node_id" not in table:
            (item_at / "node_id").fail("required (the peer's afn1... node id)")
        try:
            node_id = parse_node_id(_str(table["node_id"], item_at / "node_id"))
        except ValueError as exc:
            (item_at / "node_id").fail(str(exc))
        if any(peer.node_id == node_id for peer in peers):
            (item_at / "node_id").fail("this peer is listed twice")
        if "endpoints" not in table:
            (item_at / "endpoints").fail('required (e.g. ["tcp://192.0.2.1:7443"])')
        endpoints_at = item_at / "endpoints"
        endpoints = []
        for position, url in enumerate(_list(table["endpoints"], endpoints_at)):
            try:
                endpoints.append(parse_endpoint_url(_str(url, endpoints_at[position])))
            except ValueError as exc:
                endpoints_at[position].fail(str(exc))
        if not endpoints:
            endpoints_at.fail("must list at least one endpoint")
        name = _str(table["name"], item_at / "name") if "name" in table else ""
        connect = "on-demand"
        if "connect" in table:
            connect = _str(table["connect"], item_at / "connect").lower()
            if connect not in PEER_CONNECT_MODES:
                (item_at / "connect").fail(
                    f"unknown mode {connect!r} (choose from {', '.join(PEER_CONNECT_MODES)})"
                )
        hosted = tuple(
            _str(item, item_at / "services")
            for item in _list(table.get("services", []), item_at / "services")
        )
        sealing_key = _opt(table, "sealing_key", item_at, _sealing_key)
        peers.append(
            PeerConfig(
                node_id=node_id,
                endpoints=tuple(endpoints),
                name=name,
                connect=connect,
                services=hosted,
                sealing_key=sealing_key,
            )
        )
    return tuple(peers)


def _sealing_key(value: Any, at: _At) -> bytes:
    text = _str(value, at)
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        at.fail("expected the base64 X25519 key `accessfabric node id --sealing-key` prints")
    if len(key) != 32:
        at.fail(f"a sealing key is 32 bytes (44 base64 characters), got {len(key)} bytes")
    return key


def _sealing(value: Any, at: _At) -> SealingConfig:
    table = _table(value, at)
    _check_keys(table, at, SEALING_KEYS)
    one_hop = _opt(table, "one_hop", at, _bool)
    cipher = _opt(table, "cipher", at, _sealing_cipher) or "auto"
    keys: dict[str, bytes] = {}
    keys_at = at / "keys"
    for node_id, key in _table(table.get("keys", {}), keys_at).items():
        try:
            canonical = parse_node_id(node_id)
        except ValueError as exc:
            (keys_at / node_id).fail(str(exc))
        keys[canonical] = _sealing_key(key, keys_at / node_id)
    return SealingConfig(one_hop=True if one_hop is None else one_hop, cipher=cipher, keys=keys)


def _sealing_cipher(value: Any, at: _At) -> str:
    cipher = _str(value, at).lower()
    if cipher not in SEALING_CIPHERS:
        at.fail(f"unknown cipher {cipher!r} (choose from {', '.join(SEALING_CIPHERS)})")
    return cipher


def _services(value: Any, at: _At) -> tuple[ServiceConfig, ...]:
    services: list[ServiceConfig] = []
    for index, item in enumerate(_list(value, at)):
        item_at = at[index]
        table = _table(item, item_at)
        _check_keys(table, item_at, ("name", "target", "traffic_class", "mode", "allow"))
        for required in ("name", "target"):
            if required not in table:
                (item_at / required).fail("required")
        name = _str(table["name"], item_at / "name")
        if len(name.encode("utf-8")) > MAX_SERVICE_NAME:
            (item_at / "name").fail(f"longer than {MAX_SERVICE_NAME} bytes")
        if name in RESERVED_SERVICES:
            (item_at / "name").fail(f"{name!r} is a built-in service")
        if any(service.name == name for service in services):
            (item_at / "name").fail(f"service {name!r} is defined twice")
        try:
            target = parse_host_port(_str(table["target"], item_at / "target"))
        except ValueError as exc:
            (item_at / "target").fail(str(exc))
        traffic_class = _traffic_class(table, item_at, TrafficClass.RELIABLE)
        mode = "forward"
        if "mode" in table:
            mode = _str(table["mode"], item_at / "mode").lower()
            if mode not in SERVICE_MODES:
                (item_at / "mode").fail(
                    f"unknown mode {mode!r} (choose from {', '.join(SERVICE_MODES)})"
                )
        allow = _opt(table, "allow", item_at, _allow_list) or ()
        services.append(
            ServiceConfig(
                name=name, target=target, traffic_class=traffic_class, mode=mode, allow=allow
            )
        )
    return tuple(services)


def _allow_list(value: Any, at: _At) -> tuple[str, ...]:
    """Node ids (``afn1...``) or ``*`` alone; ``[]`` says "nobody" explicitly."""
    entries: list[str] = []
    for index, item in enumerate(_list(value, at)):
        text = _str(item, at[index])
        if text == "*":
            entries.append(text)
            continue
        try:
            node_id = parse_node_id(text)
        except ValueError as exc:
            at[index].fail(f'{exc} (an allow list holds node ids, or "*" for any node)')
        if node_id in entries:
            at[index].fail("this node id is listed twice")
        entries.append(node_id)
    if "*" in entries and len(entries) > 1:
        at.fail('"*" admits every node: list it alone, without node ids')
    return tuple(entries)


def _allow_table(value: Any, at: _At) -> dict[str, tuple[str, ...]]:
    allow: dict[str, tuple[str, ...]] = {}
    for name, entries in _table(value, at).items():
        if len(name.encode("utf-8")) > MAX_SERVICE_NAME or not name.strip():
            (at / name).fail(f"a service name of 1..{MAX_SERVICE_NAME} bytes")
        allow[name] = _allow_list(entries, at / name)
    return allow


def _traffic_class(table: dict[str, Any], at: _At, default: _C) -> TrafficClass | _C:
    """The table's ``traffic_class`` by name; ``default`` when it has none."""
    if "traffic_class" not in table:
        return default
    try:
        return TrafficClass.from_name(_str(table["traffic_class"], at / "traffic_class"))
    except ValueError as exc:
        (at / "traffic_class").fail(str(exc))


def _host_port(value: Any, at: _At) -> HostPort:
    try:
        return parse_host_port(_str(value, at), allow_port_zero=True)
    except ValueError as exc:
        at.fail(str(exc))


def _ingress(value: Any, at: _At) -> tuple[IngressConfig, ...]:
    try:
        return parse_ingress(value)
    except IngressConfigError as exc:
        where = at[exc.index]
        (where / exc.key if exc.key else where).fail(exc.problem)


def _forwards(value: Any, at: _At) -> tuple[ForwardConfig, ...]:
    forwards: list[ForwardConfig] = []
    for index, item in enumerate(_list(value, at)):
        item_at = at[index]
        table = _table(item, item_at)
        _check_keys(table, item_at, ("listen", "service", "traffic_class"))
        for required in ("listen", "service"):
            if required not in table:
                (item_at / required).fail("required")
        listen = _host_port(table["listen"], item_at / "listen")
        traffic_class = _traffic_class(table, item_at, None)
        forwards.append(
            ForwardConfig(
                listen=listen,
                service=_str(table["service"], item_at / "service"),
                traffic_class=traffic_class,
            )
        )
    return tuple(forwards)


def _section(read: Callable[[Any], _T]) -> Callable[[Any, _At], _T]:
    """A table another module reads with ``read``; its error names the key below ``at``."""

    def parse(value: Any, at: _At) -> _T:
        try:
            return read(value)
        except SectionConfigError as exc:
            (at / exc.key if exc.key else at).fail(exc.problem)

    return parse


def _int_within(value: Any, bounds: tuple[int, int], at: _At, *, off: bool) -> int:
    """An integer in ``bounds``; ``off``: the key also takes false (the caller's)."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        at.fail(f"expected an integer{' or false (off)' if off else ''}, got {_kind(value)}")
    if not low <= value <= high:
        at.fail(f"must be {low}..{high}{' (or false for off)' if off else ''}, got {value}")
    return value


def _session_value(name: str, value: Any, at: _At) -> int | float | None:
    if name in _INT_LIMITS:
        return _int_within(value, _INT_LIMITS[name], at, off=False)
    if value is False:
        return None
    if name in _OPTIONAL_INTS:
        return _int_within(value, _OPTIONAL_INTS[name], at, off=True)
    if isinstance(value, bool) or not isinstance(value, int | float):
        at.fail(f"expected a number of seconds or false (off), got {_kind(value)}")
    if not 0 < value < 1e9:
        at.fail(f"must be a positive number of seconds (or false for off), got {value}")
    return float(value)


def _session_text(name: str, text: str, at: _At) -> Any:
    stripped = text.strip()
    if name in _INT_LIMITS:
        try:
            return int(stripped)
        except ValueError:
            at.fail(f"expected an integer, got {text!r}")
    if stripped.lower() in ("false", "off", "none"):
        return False
    if name in _OPTIONAL_INTS:
        try:
            return int(stripped)
        except ValueError:
            at.fail(f"expected an integer or false (off), got {text!r}")
    return _number(stripped, at)


def _check_windows(session: SessionConfig, at: _At) -> None:
    if session.initial_stream_window > session.max_stream_window:
        (at / "initial_stream_window").fail("larger than max_stream_window")
    if session.initial_session_window > session.max_session_window:
        (at / "initial_session_window").fail("larger than max_session_window")


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds |= {list: "a list", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)
