"""Reading the name a connection asks for: the HTTP request head's ``Host``, or the SNI of a
TLS ClientHello — bounded in size, nothing consumed that is not passed on.

Both readers return the bytes they read (to be written, unchanged, to the service's stream)
and the name, or raise :class:`IngressRefusal` with what to answer: an HTTP status, or a TLS
alert for HTTPS.
"""

from __future__ import annotations

import asyncio
import struct

from accessfabric.node.config.ingress_config import host_name_ok

TLS_HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
MAX_TLS_RECORD = 16384 + 256
# TLS alert descriptions (RFC 8446 section 6)
ALERT_DECODE_ERROR = 50
ALERT_INTERNAL_ERROR = 80
ALERT_UNRECOGNIZED_NAME = 112


class IngressRefusal(Exception):
    """The connection is refused: ``status`` (HTTP) or ``alert`` (HTTPS) says how."""

    def __init__(self, reason: str, *, status: int = 400, alert: int = ALERT_DECODE_ERROR) -> None:
        self.reason = reason
        self.status = status
        self.alert = alert
        super().__init__(reason)


def _host_only(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal: never one of our names
        return value
    host, _, port = value.partition(":")
    if port and not port.isdigit():
        raise IngressRefusal("bad Host header", status=400)
    return host.rstrip(".")


def parse_http_head(head: bytes) -> str:
    """The host name a complete request head (ending ``\\r\\n\\r\\n``) asks for."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise IngressRefusal("undecodable request head") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise IngressRefusal("malformed request line", status=400)
    hosts = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            raise IngressRefusal("malformed header line", status=400)
        if name.lower() == "host":
            hosts.append(value)
    if len(hosts) != 1:
        raise IngressRefusal("exactly one Host header is required", status=400)
    host = _host_only(hosts[0])
    if not host:
        raise IngressRefusal("empty Host header", status=400)
    return host


async def read_http_head(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, str]:
    """Read until the end of the request head (at most ``limit`` bytes): (bytes read, host)."""
    data = bytearray()
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 > limit:
                break
            return bytes(data), parse_http_head(bytes(data[: end + 4]))
        if len(data) >= limit:
            break
        chunk = await reader.read(limit - len(data) + 4)
        if not chunk:
            raise IngressRefusal("connection closed before the request head ended", status=400)
        data += chunk
    raise IngressRefusal(f"request head over {limit} bytes", status=431)


def server_name(hello: bytes) -> str | None:
    """The SNI host name of a ClientHello handshake message body (after type and length)."""
    try:
        at = 2 + 32  # legacy_version, random
        at += 1 + hello[at]  # legacy_session_id
        (suites,) = struct.unpack_from("!H", hello, at)
        at += 2 + suites
        at += 1 + hello[at]  # legacy_compression_methods
        if at == len(hello):
            return None  # no extensions
        (total,) = struct.unpack_from("!H", hello, at)
        at += 2
        end = at + total
        if end > len(hello):
            raise IngressRefusal("ClientHello extensions overrun", alert=ALERT_DECODE_ERROR)
        while at + 4 <= end:
            kind, length = struct.unpack_from("!HH", hello, at)
            at += 4
            if kind == EXT_SERVER_NAME:
                (list_length,) = struct.unpack_from("!H", hello, at)
                pos, list_end = at + 2, at + 2 + list_length
                while pos + 3 <= list_end:
                    name_type, name_length = struct.unpack_from("!BH", hello, pos)
                    pos += 3
                    if name_type == 0:
                        return hello[pos : pos + name_length].decode("ascii").lower().rstrip(".")
                    pos += name_length
                return None
            at += length
    except (struct.error, IndexError, UnicodeDecodeError):
        raise IngressRefusal("malformed ClientHello", alert=ALERT_DECODE_ERROR) from None
    return None


async def read_client_hello(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, str]:
    """Read the TLS records that hold the ClientHello (at most ``limit`` bytes): (bytes, SNI)."""
    raw = bytearray()
    handshake = bytearray()
    needed: int | None = None
    while needed is None or len(handshake) < needed:
        header = await reader.readexactly(5)
        kind, _version, length = struct.unpack("!BHH", header)
        if kind != TLS_HANDSHAKE or length == 0 or length > MAX_TLS_RECORD:
            raise IngressRefusal("not a TLS handshake", alert=ALERT_DECODE_ERROR)
        if len(raw) + 5 + length > limit:
            raise IngressRefusal(f"ClientHello over {limit} bytes", alert=ALERT_DECODE_ERROR)
        body = await reader.readexactly(length)
        raw += header + body
        handshake += body
        if needed is None and len(handshake) >= 4:
            if handshake[0] != CLIENT_HELLO:
                raise IngressRefusal("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(handshake[1:4], "big")
    name = server_name(bytes(handshake[4:needed]))
    if name is None:
        raise IngressRefusal("no server name (SNI)", alert=ALERT_UNRECOGNIZED_NAME)
    if not host_name_ok(name):
        raise IngressRefusal("bad server name", alert=ALERT_UNRECOGNIZED_NAME)
    return bytes(raw), name
