"""The fourteen frames of Fabric Data Session V1 and how each one serialises.

Every frame is ``header (9 bytes) | payload``; the header is
``length u24 | type u8 | flags u8 | R u1 + stream id u31`` in network byte
order (the HTTP/2 layout).  Each class below documents its payload; the
authoritative description with diagrams is ``docs/protocol.md``.

Frames are plain slotted dataclasses: they are values, built positionally on
the decode hot path, so they are not frozen (a frozen dataclass costs about
four times as much to build).  ``to_bytes()`` validates every field and raises
:class:`~accessfabric.errors.LocalProtocolError` for a value the wire cannot
carry; decoding is in :mod:`accessfabric.wire.decoder`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.wire.limits import (
    MAX_CAPABILITIES,
    MAX_FRAME_SIZE_CAP,
    MAX_GOAWAY_REASON,
    MAX_KEY_EXCHANGE,
    MAX_NODE_ID,
    MAX_NODE_RECORD,
    MAX_PRESSURE_LEVEL,
    MAX_RESUME_TOKEN,
    MAX_ROUTE_LEASE,
    MAX_SERVICE_NAME,
    MAX_SIGNATURE,
    MAX_STREAM_ID,
    MAX_U32,
    MAX_U64,
    MAX_VERSIONS,
    MIN_MAX_FRAME_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
)
from accessfabric.wire.registry import Flags, FrameType, TrafficClass

HEADER = struct.Struct(">IBI")
"""(length << 8 | type, flags, stream id): the 9-byte header."""

DATA_HEADER = struct.Struct(">IBIQ")
"""The header plus DATA's u64 offset: 17 bytes."""
pack_data_header = DATA_HEADER.pack

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_ACK = struct.Struct(">QI")
_U64_FRAME = DATA_HEADER
"""A header and one u64: DATA's first 17 bytes, and all of STREAM_CREDIT, PING, ..."""
_ACK_FRAME = struct.Struct(">IBIQI")
ACK_WORD = _ACK.size << 8 | FrameType.ACK
"""An ACK frame's first word (length << 8 | type): the fast paths match it whole."""
_PRESSURE = struct.Struct(">BBBB")
_GOAWAY = struct.Struct(">II")
_SESSION_READY = struct.Struct(">HIIIIQQ")
_OPEN_FIXED = struct.Struct(">BQQ")

# Where a frame type may appear.
STREAM_ZERO = 0  # only on stream 0 (the session itself)
STREAM_NONZERO = 1  # only on a stream
STREAM_ANY = 2  # either (STREAM_CREDIT: 0 is session-wide)


def _fail(message: str) -> LocalProtocolError:
    return LocalProtocolError(f"cannot encode: {message}")


def _header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise _fail(f"stream id {stream_id} outside 0..{MAX_STREAM_ID}")
    if length > MAX_FRAME_SIZE_CAP:
        raise _fail(f"payload of {length} bytes exceeds the {MAX_FRAME_SIZE_CAP}-byte cap")
    return HEADER.pack(length << 8 | frame_type, flags, stream_id)


def _bounded(name: str, value: bytes, low: int, high: int) -> bytes:
    if not low <= len(value) <= high:
        raise _fail(f"{name} must be {low}..{high} bytes, got {len(value)}")
    return bytes(value)


def _utf8(name: str, value: str, low: int, high: int) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"{name} is not encodable as UTF-8 (lone surrogate)") from None
    return _bounded(name, raw, low, high)


def _u64_frame(frame_type: int, stream_id: int, name: str, value: int) -> bytes:
    """A frame whose whole payload is one u64 (PING, PONG, STREAM_CREDIT, CLOSE_STREAM)."""
    if 0 <= stream_id <= MAX_STREAM_ID and 0 <= value <= MAX_U64:
        return _U64_FRAME.pack(8 << 8 | frame_type, 0, stream_id, value)  # one pack, no join
    return _header(frame_type, 0, stream_id, 8) + _U64.pack(_uint(name, value, MAX_U64))


def _uint(name: str, value: int, high: int) -> int:
    if not 0 <= value <= high:
        raise _fail(f"{name} {value} outside 0..{high}")
    return value


class Frame:
    """Base of all frames."""

    __slots__ = ()

    frame_type: ClassVar[FrameType]
    allowed_flags: ClassVar[int] = 0
    stream_scope: ClassVar[int] = STREAM_ZERO

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def encode_into(self, out: bytearray) -> None:
        """Append this frame's bytes to ``out``."""
        out += self.to_bytes()


@dataclass(slots=True)
class Data(Frame):
    """``offset u64 | payload``: stream bytes starting at byte ``offset`` of the stream.

    ``END_STREAM`` marks the sender's last bytes.  ``payload`` is a memoryview
    into the received chunk when decoded (zero-copy).
    """

    frame_type: ClassVar[FrameType] = FrameType.DATA
    allowed_flags: ClassVar[int] = Flags.END_STREAM
    stream_scope: ClassVar[int] = STREAM_NONZERO

    stream_id: int
    offset: int
    payload: bytes | memoryview
    end_stream: bool = False

    def to_bytes(self) -> bytes:
        payload = self.payload
        stream_id = self.stream_id
        length = len(payload) + 8
        if (
            0 < stream_id <= MAX_STREAM_ID
            and length <= MAX_FRAME_SIZE_CAP
            and 0 <= self.offset <= MAX_U64
        ):
            return (
                pack_data_header(length << 8, 1 if self.end_stream else 0, stream_id, self.offset)
                + payload
            )
        raise self._invalid()

    def encode_into(self, out: bytearray) -> None:
        payload = self.payload
        stream_id = self.stream_id
        length = len(payload) + 8
        if (
            0 < stream_id <= MAX_STREAM_ID
            and length <= MAX_FRAME_SIZE_CAP
            and 0 <= self.offset <= MAX_U64
        ):
            out += pack_data_header(
                length << 8, 1 if self.end_stream else 0, stream_id, self.offset
            )
            out += payload
            return
        raise self._invalid()

    def _invalid(self) -> LocalProtocolError:
        return _fail(
            f"DATA with stream id {self.stream_id}, offset {self.offset} "
            f"and {len(self.payload)} payload bytes"
        )


@dataclass(slots=True)
class OpenStream(Frame):
    """Open stream ``stream_id`` to a logical service.

    ``class u8 | route_id u64 | start_offset u64 | service (u8 len, UTF-8) |
    resume_token (u8 len) | key_exchange (u16 len) | route_lease (u16 len)``.
    ``RESUME`` says the stream continues an end-to-end stream named by
    ``resume_token`` from byte ``start_offset``.
    """

    frame_type: ClassVar[FrameType] = FrameType.OPEN_STREAM
    allowed_flags: ClassVar[int] = Flags.RESUME
    stream_scope: ClassVar[int] = STREAM_NONZERO

    stream_id: int
    service: str
    traffic_class: TrafficClass
    route_id: int = 0
    start_offset: int = 0
    resume: bool = False
    resume_token: bytes = b""
    key_exchange: bytes = b""
    route_lease: bytes = b""

    def to_bytes(self) -> bytes:
        if self.stream_id == 0:
            raise _fail("OPEN_STREAM needs a non-zero stream id")
        service = _utf8("service", self.service, 1, MAX_SERVICE_NAME)
        token = _bounded("resume_token", self.resume_token, 0, MAX_RESUME_TOKEN)
        kex = _bounded("key_exchange", self.key_exchange, 0, MAX_KEY_EXCHANGE)
        lease = _bounded("route_lease", self.route_lease, 0, MAX_ROUTE_LEASE)
        try:
            traffic_class = TrafficClass(self.traffic_class)
        except ValueError:
            raise _fail(f"unknown traffic class {self.traffic_class!r}") from None
        fixed = _OPEN_FIXED.pack(
            traffic_class,
            _uint("route_id", self.route_id, MAX_U64),
            _uint("start_offset", self.start_offset, MAX_U64),
        )
        body = b"".join(
            (
                fixed,
                bytes((len(service),)),
                service,
                bytes((len(token),)),
                token,
                len(kex).to_bytes(2, "big"),
                kex,
                len(lease).to_bytes(2, "big"),
                lease,
            )
        )
        flags = Flags.RESUME if self.resume else 0
        return _header(self.frame_type, flags, self.stream_id, len(body)) + body


@dataclass(slots=True)
class Ack(Frame):
    """``offset u64 | window u32``: every byte before ``offset`` arrived; ``window`` bytes fit."""

    frame_type: ClassVar[FrameType] = FrameType.ACK
    stream_scope: ClassVar[int] = STREAM_NONZERO

    stream_id: int
    offset: int
    window: int

    def to_bytes(self) -> bytes:
        stream_id, offset, window = self.stream_id, self.offset, self.window
        if 0 < stream_id <= MAX_STREAM_ID and 0 <= offset <= MAX_U64 and 0 <= window <= MAX_U32:
            return _ACK_FRAME.pack(ACK_WORD, 0, stream_id, offset, window)  # one per read batch
        if self.stream_id == 0:
            raise _fail("ACK needs a non-zero stream id")
        body = _ACK.pack(
            _uint("offset", self.offset, MAX_U64), _uint("window", self.window, MAX_U32)
        )
        return _header(self.frame_type, 0, self.stream_id, len(body)) + body


@dataclass(slots=True)
class StreamCredit(Frame):
    """``max_offset u64``: the sender may send stream bytes up to (not including) ``max_offset``.

    Credit is an absolute limit (as QUIC's MAX_STREAM_DATA), so a repeated or
    reordered grant is harmless.  On stream 0 it limits the session's total
    DATA payload bytes.
    """

    frame_type: ClassVar[FrameType] = FrameType.STREAM_CREDIT
    stream_scope: ClassVar[int] = STREAM_ANY

    stream_id: int
    max_offset: int

    def to_bytes(self) -> bytes:
        return _u64_frame(self.frame_type, self.stream_id, "max_offset", self.max_offset)


@dataclass(slots=True)
class CloseStream(Frame):
    """``final_offset u64``: the sender's side of the stream ends at ``final_offset``."""

    frame_type: ClassVar[FrameType] = FrameType.CLOSE_STREAM
    stream_scope: ClassVar[int] = STREAM_NONZERO

    stream_id: int
    final_offset: int

    def to_bytes(self) -> bytes:
        if self.stream_id == 0:
            raise _fail("CLOSE_STREAM needs a non-zero stream id")
        return _u64_frame(self.frame_type, self.stream_id, "final_offset", self.final_offset)


@dataclass(slots=True)
class ResetStream(Frame):
    """``error_code u32``: the stream failed; every other stream lives on."""

    frame_type: ClassVar[FrameType] = FrameType.RESET_STREAM
    stream_scope: ClassVar[int] = STREAM_NONZERO

    stream_id: int
    error_code: ErrorCode | int

    def to_bytes(self) -> bytes:
        if self.stream_id == 0:
            raise _fail("RESET_STREAM needs a non-zero stream id")
        body = _U32.pack(_uint("error_code", int(self.error_code), MAX_U32))
        return _header(self.frame_type, 0, self.stream_id, 4) + body


@dataclass(slots=True)
class Ping(Frame):
    """``opaque u64``: echoed back in PONG."""

    frame_type: ClassVar[FrameType] = FrameType.PING

    opaque: int

    def to_bytes(self) -> bytes:
        return _u64_frame(self.frame_type, 0, "opaque", self.opaque)


@dataclass(slots=True)
class Pong(Frame):
    """``opaque u64``: the value of the PING it answers."""

    frame_type: ClassVar[FrameType] = FrameType.PONG

    opaque: int

    def to_bytes(self) -> bytes:
        return _u64_frame(self.frame_type, 0, "opaque", self.opaque)


@dataclass(slots=True)
class RouteUpdate(Frame):
    """``lease``: an opaque signed route lease or alternate route set (1..max frame size)."""

    frame_type: ClassVar[FrameType] = FrameType.ROUTE_UPDATE

    lease: bytes

    def to_bytes(self) -> bytes:
        body = _bounded("lease", self.lease, 1, MAX_FRAME_SIZE_CAP)
        return _header(self.frame_type, 0, 0, len(body)) + body


@dataclass(slots=True)
class NodePressure(Frame):
    """``queue u8 | cpu u8 | memory u8 | network u8``: pressure levels in percent (0..100)."""

    frame_type: ClassVar[FrameType] = FrameType.NODE_PRESSURE

    queue: int
    cpu: int
    memory: int
    network: int

    def to_bytes(self) -> bytes:
        levels = [
            _uint(name, value, MAX_PRESSURE_LEVEL)
            for name, value in (
                ("queue", self.queue),
                ("cpu", self.cpu),
                ("memory", self.memory),
                ("network", self.network),
            )
        ]
        return _header(self.frame_type, 0, 0, 4) + _PRESSURE.pack(*levels)


@dataclass(slots=True)
class Goaway(Frame):
    """``last_stream_id u32 | error_code u32 | reason (UTF-8, rest of frame)``."""

    frame_type: ClassVar[FrameType] = FrameType.GOAWAY

    last_stream_id: int
    error_code: ErrorCode | int
    reason: str = ""

    def to_bytes(self) -> bytes:
        reason = _utf8("reason", self.reason, 0, MAX_GOAWAY_REASON)
        body = (
            _GOAWAY.pack(
                _uint("last_stream_id", self.last_stream_id, MAX_STREAM_ID),
                _uint("error_code", int(self.error_code), MAX_U32),
            )
            + reason
        )
        return _header(self.frame_type, 0, 0, len(body)) + body


@dataclass(slots=True)
class Hello(Frame):
    """Who the sender is and what it speaks.

    ``version count u8 | versions u16 x count | public_key (32) | nonce (32) |
    node_id (u8 len, UTF-8) | capabilities (u16 len) | node_record (u16 len)``.
    """

    frame_type: ClassVar[FrameType] = FrameType.HELLO

    versions: tuple[int, ...]
    node_id: str
    public_key: bytes
    nonce: bytes
    capabilities: bytes = b""
    node_record: bytes = b""

    def to_bytes(self) -> bytes:
        versions = tuple(self.versions)
        if not 1 <= len(versions) <= MAX_VERSIONS:
            raise _fail(f"HELLO must offer 1..{MAX_VERSIONS} versions, got {len(versions)}")
        for version in versions:
            if not 1 <= version <= 0xFFFF:
                raise _fail(f"version {version} outside 1..65535")
        public_key = _bounded("public_key", self.public_key, PUBLIC_KEY_SIZE, PUBLIC_KEY_SIZE)
        nonce = _bounded("nonce", self.nonce, NONCE_SIZE, NONCE_SIZE)
        node_id = _utf8("node_id", self.node_id, 1, MAX_NODE_ID)
        caps = _bounded("capabilities", self.capabilities, 0, MAX_CAPABILITIES)
        record = _bounded("node_record", self.node_record, 0, MAX_NODE_RECORD)
        body = b"".join(
            (
                bytes((len(versions),)),
                struct.pack(f">{len(versions)}H", *versions),
                public_key,
                nonce,
                bytes((len(node_id),)),
                node_id,
                len(caps).to_bytes(2, "big"),
                caps,
                len(record).to_bytes(2, "big"),
                record,
            )
        )
        return _header(self.frame_type, 0, 0, len(body)) + body


@dataclass(slots=True)
class Auth(Frame):
    """``signature`` (rest of frame, 1..1024 bytes) over the session's AUTH transcript."""

    frame_type: ClassVar[FrameType] = FrameType.AUTH

    signature: bytes

    def to_bytes(self) -> bytes:
        body = _bounded("signature", self.signature, 1, MAX_SIGNATURE)
        return _header(self.frame_type, 0, 0, len(body)) + body


@dataclass(slots=True)
class SessionReady(Frame):
    """The limits the sender accepts for this session.

    ``version u16 | max_frame_size u32 | initial_stream_window u32 |
    initial_session_window u32 | max_concurrent_streams u32 | route_epoch u64 |
    peer_epoch u64``.
    """

    frame_type: ClassVar[FrameType] = FrameType.SESSION_READY

    version: int
    max_frame_size: int
    initial_stream_window: int
    initial_session_window: int
    max_concurrent_streams: int
    route_epoch: int = 0
    peer_epoch: int = 0

    def to_bytes(self) -> bytes:
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_CAP:
            raise _fail(
                f"max_frame_size {self.max_frame_size} outside "
                f"{MIN_MAX_FRAME_SIZE}..{MAX_FRAME_SIZE_CAP}"
            )
        body = _SESSION_READY.pack(
            _uint("version", self.version, 0xFFFF),
            self.max_frame_size,
            _uint("initial_stream_window", self.initial_stream_window, MAX_U32),
            _uint("initial_session_window", self.initial_session_window, MAX_U32),
            _uint("max_concurrent_streams", self.max_concurrent_streams, MAX_U32),
            _uint("route_epoch", self.route_epoch, MAX_U64),
            _uint("peer_epoch", self.peer_epoch, MAX_U64),
        )
        return _header(self.frame_type, 0, 0, len(body)) + body


@dataclass(slots=True)
class UnknownFrame(Frame):
    """A frame of a type this implementation does not know, sent with ``IGNORABLE``.

    Decoded so the receiver can count it; it has no meaning and is never acted on.
    """

    type_code: int
    flags: int
    stream_id: int
    payload: bytes

    def to_bytes(self) -> bytes:
        type_code = _uint("type_code", self.type_code, 0xFF)
        if type_code in FrameType._value2member_map_:
            raise _fail(f"type {type_code:#x} is a known frame type")
        flags = _uint("flags", self.flags, 0xFF)
        if not flags & Flags.IGNORABLE:
            raise _fail("a frame of unknown type without IGNORABLE is rejected by every receiver")
        return _header(type_code, flags, self.stream_id, len(self.payload)) + self.payload


FRAME_CLASSES: dict[int, type[Frame]] = {
    cls.frame_type: cls
    for cls in (
        Data,
        OpenStream,
        Ack,
        StreamCredit,
        CloseStream,
        ResetStream,
        Ping,
        Pong,
        RouteUpdate,
        NodePressure,
        Goaway,
        Hello,
        Auth,
        SessionReady,
    )
}
"""Frame type -> class, for every type of Fabric Data Session V1."""


def encode(frame: Frame) -> bytes:
    """Serialise one frame."""
    return frame.to_bytes()


def encode_into(frame: Frame, out: bytearray) -> None:
    """Append one frame to ``out`` (DATA payloads are copied once, straight into ``out``)."""
    frame.encode_into(out)


def encode_many(frames: list[Frame]) -> bytearray:
    """Serialise many frames into one buffer, copying each payload exactly once."""
    out = bytearray()
    for frame in frames:
        frame.encode_into(out)
    return out
