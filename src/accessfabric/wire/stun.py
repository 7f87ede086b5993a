"""STUN Binding messages for the NAT probe (sans-IO): RFC 5389 with RFC 5780's attributes.

Only what the probe needs: a Binding request, optionally with CHANGE-REQUEST (0x0003;
only the change-port flag is honoured: a reflector has one address) and RESPONSE-PORT
(0x0027: send the response to this port of the request's source address), and a Binding
success response carrying XOR-MAPPED-ADDRESS (0x0020), the address the reflector saw.
A request can be padded with PADDING (0x0026, RFC 5780 section 7.6; its content is
ignored) to a size no answer exceeds: a reflector answers only requests at least
``PADDED_SIZE`` bytes long, so it never sends more bytes than it was sent.
No authentication, no FINGERPRINT: the probe learns nothing secret and a forged answer
can only make the node report a wrong NAT type (a hint to the planner, never a grant).

The transaction id (12 bytes) is the caller's: this module draws no randomness.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
CHANGE_REQUEST = 0x0003
PADDING = 0x0026
RESPONSE_PORT = 0x0027
CHANGE_PORT = 0x02
CHANGE_IP = 0x04
MAX_MESSAGE = 548
"""The largest message parsed (RFC 5389's minimum path MTU for unauthenticated STUN)."""
LARGEST_SUCCESS = HEADER.size + 4 + 20
"""The largest Binding success this module encodes: 44 bytes, for an IPv6 mapped address
(32 for IPv4)."""
PADDED_SIZE = 64
"""The size the NAT probe pads its Binding requests to, and the least a reflector answers
(``node/dialing/reflector_limits.py``): at least ``LARGEST_SUCCESS``, with room for one more
attribute in an answer."""


class StunError(ValueError):
    """Not a STUN message this module understands."""


@dataclass(frozen=True, slots=True)
class BindingRequest:
    transaction_id: bytes
    change_port: bool = False
    response_port: int | None = None


@dataclass(frozen=True, slots=True)
class BindingSuccess:
    transaction_id: bytes
    mapped: tuple[str, int]
    """The requester's address as the reflector saw it (XOR-MAPPED-ADDRESS)."""


def _attribute(kind: int, value: bytes) -> bytes:
    padding = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", kind, len(value)) + value + padding


def _message(kind: int, transaction_id: bytes, attributes: bytes) -> bytes:
    if len(transaction_id) != 12:
        raise StunError("a transaction id is 12 bytes")
    return HEADER.pack(kind, len(attributes), MAGIC_COOKIE, transaction_id) + attributes


def encode_request(request: BindingRequest, size: int = 0) -> bytes:
    """The request; with ``size``, padded to at least that many bytes with a PADDING
    attribute (the size rounded up to a multiple of 4, at most ``MAX_MESSAGE``)."""
    if size > MAX_MESSAGE:
        raise StunError(f"a request is at most {MAX_MESSAGE} bytes, not {size}")
    attributes = b""
    if request.change_port:
        attributes += _attribute(CHANGE_REQUEST, struct.pack("!I", CHANGE_PORT))
    if request.response_port is not None:
        attributes += _attribute(RESPONSE_PORT, struct.pack("!HH", request.response_port, 0))
    missing = size - HEADER.size - len(attributes)
    if missing > 0:
        attributes += _attribute(PADDING, b"\0" * max(0, missing - 4))
    return _message(BINDING_REQUEST, request.transaction_id, attributes)


def _xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    address = ipaddress.ip_address(host)
    mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    packed = bytes(a ^ b for a, b in zip(address.packed, mask, strict=False))
    family = 1 if address.version == 4 else 2
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + packed


def encode_success(response: BindingSuccess) -> bytes:
    host, port = response.mapped
    value = _xor_address(host, port, response.transaction_id)
    return _message(BINDING_SUCCESS, response.transaction_id, _attribute(XOR_MAPPED_ADDRESS, value))


def _attributes(data: bytes, length: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = HEADER.size
    end = HEADER.size + length
    while offset + 4 <= end:
        kind, size = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + size > end:
            raise StunError("an attribute runs past the message")
        found.setdefault(kind, data[offset : offset + size])
        offset += size + (-size % 4)
    return found


def decode(data: bytes) -> BindingRequest | BindingSuccess:
    """One STUN message; :class:`StunError` for anything else (other types included)."""
    if len(data) < HEADER.size or len(data) > MAX_MESSAGE:
        raise StunError("not a STUN message: size")
    kind, length, cookie, transaction_id = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or kind & 0xC000 or length % 4 or HEADER.size + length != len(data):
        raise StunError("not a STUN message: header")
    attributes = _attributes(data, length)
    if kind == BINDING_REQUEST:
        change = attributes.get(CHANGE_REQUEST)
        port = attributes.get(RESPONSE_PORT)
        if (change is not None and len(change) != 4) or (port is not None and len(port) != 4):
            raise StunError("a malformed CHANGE-REQUEST or RESPONSE-PORT")
        return BindingRequest(
            transaction_id,
            change_port=change is not None and bool(struct.unpack("!I", change)[0] & CHANGE_PORT),
            response_port=None if port is None else struct.unpack("!HH", port)[0],
        )
    if kind == BINDING_SUCCESS:
        value = attributes.get(XOR_MAPPED_ADDRESS)
        if value is None or len(value) not in (8, 20):
            raise StunError("a Binding success without XOR-MAPPED-ADDRESS")
        family, xport = struct.unpack_from("!xBH", value)
        mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id
        size = 4 if family == 1 else 16
        if len(value) != 4 + size:
            raise StunError("XOR-MAPPED-ADDRESS: family and length disagree")
        packed = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
        host = str(ipaddress.ip_address(packed))
        return BindingSuccess(transaction_id, (host, xport ^ (MAGIC_COOKIE >> 16)))
    raise StunError(f"STUN message type {kind:#06x} not handled")
