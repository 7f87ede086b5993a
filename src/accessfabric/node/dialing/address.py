"""Endpoint addresses: ``host:port`` and carrier URLs (``tcp://``, ``wss://``, ``quic://``, ``https://``).

Every parser here raises :class:`ValueError` with a one-line message that names
what is wrong, so config and CLI errors can quote it as is.
"""

from __future__ import annotations

from dataclasses import dataclass

CARRIERS = ("tcp", "websocket", "quic", "https")
"""Carrier names as they appear in config files (``carrier = "tcp"``); ``https`` is the
emergency HTTPS fallback (long-poll, ``docs/adr/0009-https-fallback.md``)."""

URL_SCHEMES = {"tcp": "tcp", "wss": "websocket", "quic": "quic", "https": "https"}
"""URL scheme -> carrier."""

DEFAULT_WEBSOCKET_PATH = "/fabric"
DEFAULT_HTTPS_PATH = "/fabric-poll"
DEFAULT_PATHS = {"websocket": DEFAULT_WEBSOCKET_PATH, "https": DEFAULT_HTTPS_PATH}
"""Carriers with an HTTP path, and the path they use when none is given."""
SCHEME_OF = {"tcp": "tcp", "websocket": "wss", "quic": "quic", "https": "https"}


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where a carrier listens or dials: carrier name, host, port and (HTTP carriers) path."""

    carrier: str
    host: str
    port: int
    path: str = ""
    behind_proxy: bool = False
    """A websocket listener only a TLS-terminating reverse proxy reaches (ADR 0005)."""
    tls: bool = True
    """False: plain ws between the proxy and a ``behind_proxy`` listener."""

    @property
    def address(self) -> str:
        return str(HostPort(host=self.host, port=self.port))

    @property
    def url(self) -> str:
        scheme = SCHEME_OF.get(self.carrier, self.carrier)
        if self.carrier in DEFAULT_PATHS:
            return f"{scheme}://{self.address}{self.path or DEFAULT_PATHS[self.carrier]}"
        return f"{scheme}://{self.address}"

    def __str__(self) -> str:
        return self.url


def parse_host_port(text: str, *, allow_port_zero: bool = False) -> HostPort:
    """``host:port`` or ``[ipv6]:port``."""
    if not isinstance(text, str):
        raise ValueError(f"expected a 'host:port' string, got {type(text).__name__}")
    candidate = text.strip()
    if candidate.startswith("["):
        host, sep, rest = candidate[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected '[ipv6]:port'")
        port_text = rest[1:]
    else:
        host, sep, port_text = candidate.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {text!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: write IPv6 hosts as '[addr]:port'")
    if not host:
        raise ValueError(f"bad address {text!r}: empty host")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"bad address {text!r}: invalid character in host")
    if not port_text.isdigit():
        raise ValueError(f"bad address {text!r}: port must be a number")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port must be {lowest}..65535")
    return HostPort(host=host, port=port)


def parse_endpoint_url(text: str, *, allow_port_zero: bool = False) -> Endpoint:
    """``tcp://host:port``, ``quic://host:port``, ``wss://host:port[/path]`` (path defaults to
    ``/fabric``) or ``https://host:port[/path]`` (the fallback; ``/fabric-poll``)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an endpoint URL string, got {type(text).__name__}")
    candidate = text.strip()
    scheme, sep, rest = candidate.partition("://")
    if not sep:
        raise ValueError(
            f"bad endpoint URL {text!r}: expected tcp://host:port or wss://host:port/path"
        )
    carrier = URL_SCHEMES.get(scheme.lower())
    if carrier is None:
        schemes = ", ".join(f"{s}://" for s in URL_SCHEMES)
        raise ValueError(f"bad endpoint URL {text!r}: unknown scheme {scheme!r} (use {schemes})")
    authority, slash, path = rest.partition("/")
    path = slash + path
    if carrier not in DEFAULT_PATHS and path not in ("", "/"):
        raise ValueError(f"bad endpoint URL {text!r}: {scheme.lower()}:// URLs take no path")
    default = DEFAULT_PATHS.get(carrier)
    path = validate_websocket_path(path or default) if default else ""
    try:
        where = parse_host_port(authority, allow_port_zero=allow_port_zero)
    except ValueError as exc:
        raise ValueError(f"bad endpoint URL {text!r}: {_detail(exc)}") from None
    return Endpoint(carrier=carrier, host=where.host, port=where.port, path=path)


def validate_websocket_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise ValueError(f"bad WebSocket path {path!r}: must start with '/', no spaces, ? or #")
    return path


def _detail(error: ValueError) -> str:
    message = str(error)
    return message.split(": ", 1)[1] if ": " in message else message
