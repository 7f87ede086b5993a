"""Incremental frame decoder: bytes in any chunking -> frames.

Every received byte is copied at most once.  A ``bytes`` chunk is owned: DATA
payloads are memoryviews of it.  Any other buffer may be reused by the caller
once ``feed`` returns, so each DATA payload is copied out of it into a ``bytes``
of its own (one copy of the payload, no copy of the whole chunk): a frame-sized
``bytes`` comes from the allocator's heap where a whole-chunk copy (up to the
carrier's 256 KiB) is freshly mapped memory, and a reader that takes one frame
gets that object with no further copy.  Only an incomplete frame's bytes are
kept (in a ``bytearray``) until the rest arrives.  Any malformed
input raises a :class:`~accessfabric.errors.RemoteProtocolError` subclass;
after that the decoder is poisoned and raises the same error again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import cast

from accessfabric.errors import (
    FrameFormatError,
    FrameSizeError,
    InvalidStreamIdError,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownFrameTypeError,
    error_code_from_int,
)
from accessfabric.wire.frames import (
    ACK_WORD,
    DATA_HEADER,
    FRAME_CLASSES,
    HEADER,
    STREAM_NONZERO,
    STREAM_ZERO,
    Ack,
    Auth,
    CloseStream,
    Data,
    Frame,
    Goaway,
    Hello,
    NodePressure,
    OpenStream,
    Ping,
    Pong,
    ResetStream,
    RouteUpdate,
    SessionReady,
    StreamCredit,
    UnknownFrame,
)
from accessfabric.wire.limits import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
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
    MAX_VERSIONS,
    MIN_MAX_FRAME_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
)
from accessfabric.wire.registry import Flags, FrameType, TrafficClass

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_ACK = struct.Struct(">QI")
_GOAWAY = struct.Struct(">II")
_SESSION_READY = struct.Struct(">HIIIIQQ")
_OPEN_FIXED = struct.Struct(">BQQ")
_PRESSURE = struct.Struct(">BBBB")

_IGNORABLE = int(Flags.IGNORABLE)
_CREDIT_WORD = _U64.size << 8 | FrameType.STREAM_CREDIT
_DATA_BAD_FLAGS = 0xFF & ~int(Flags.END_STREAM | Flags.IGNORABLE)
_STREAM_BIT = 1 << 31


class _Reader:
    """A bounds-checked cursor over one frame payload."""

    __slots__ = ("_name", "_offset", "_view")

    def __init__(self, name: str, view: memoryview) -> None:
        self._name = name
        self._view = view
        self._offset = 0

    def take(self, size: int) -> memoryview:
        end = self._offset + size
        if end > len(self._view):
            raise FrameFormatError(f"{self._name}: payload ends inside a field")
        chunk = self._view[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        chunk = self.take(2)
        return chunk[0] << 8 | chunk[1]

    def blob(self, field: str, length: int, low: int, high: int) -> bytes:
        if not low <= length <= high:
            raise FrameFormatError(f"{self._name}: {field} length {length} outside {low}..{high}")
        return bytes(self.take(length))

    def text(self, field: str, length: int, low: int, high: int) -> str:
        raw = self.blob(field, length, low, high)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameFormatError(f"{self._name}: {field} is not valid UTF-8") from None

    def rest(self) -> memoryview:
        return self.take(len(self._view) - self._offset)

    def finish(self) -> None:
        if self._offset != len(self._view):
            extra = len(self._view) - self._offset
            raise FrameFormatError(f"{self._name}: {extra} unexpected trailing bytes")


def _fixed(name: str, payload: memoryview, size: int) -> None:
    if len(payload) != size:
        raise FrameSizeError(f"{name} payload must be {size} bytes, got {len(payload)}")


def _data(stream_id: int, flags: int, payload: memoryview) -> Frame:
    if len(payload) < 8:
        raise FrameSizeError(f"DATA payload of {len(payload)} bytes is shorter than its offset")
    (offset,) = _U64.unpack_from(payload)
    return Data(stream_id, offset, payload[8:], bool(flags & Flags.END_STREAM))


def _open_stream(stream_id: int, flags: int, payload: memoryview) -> Frame:
    reader = _Reader("OPEN_STREAM", payload)
    class_code, route_id, start_offset = reader.unpack(_OPEN_FIXED)
    try:
        traffic_class = TrafficClass(class_code)
    except ValueError:
        raise FrameFormatError(f"OPEN_STREAM: unknown traffic class {class_code}") from None
    service = reader.text("service", reader.u8(), 1, MAX_SERVICE_NAME)
    token = reader.blob("resume_token", reader.u8(), 0, MAX_RESUME_TOKEN)
    kex = reader.blob("key_exchange", reader.u16(), 0, MAX_KEY_EXCHANGE)
    lease = reader.blob("route_lease", reader.u16(), 0, MAX_ROUTE_LEASE)
    reader.finish()
    resume = bool(flags & Flags.RESUME)
    return OpenStream(
        stream_id, service, traffic_class, route_id, start_offset, resume, token, kex, lease
    )


def _ack(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("ACK", payload, _ACK.size)
    offset, window = _ACK.unpack(payload)
    return Ack(stream_id, offset, window)


def _stream_credit(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("STREAM_CREDIT", payload, 8)
    return StreamCredit(stream_id, _U64.unpack(payload)[0])


def _close_stream(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("CLOSE_STREAM", payload, 8)
    return CloseStream(stream_id, _U64.unpack(payload)[0])


def _reset_stream(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("RESET_STREAM", payload, 4)
    return ResetStream(stream_id, error_code_from_int(_U32.unpack(payload)[0]))


def _ping(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("PING", payload, 8)
    return Ping(_U64.unpack(payload)[0])


def _pong(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("PONG", payload, 8)
    return Pong(_U64.unpack(payload)[0])


def _route_update(stream_id: int, flags: int, payload: memoryview) -> Frame:
    if not payload:
        raise FrameFormatError("ROUTE_UPDATE: empty lease")
    return RouteUpdate(bytes(payload))


def _node_pressure(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("NODE_PRESSURE", payload, 4)
    levels = _PRESSURE.unpack(payload)
    if max(levels) > MAX_PRESSURE_LEVEL:
        raise FrameFormatError(f"NODE_PRESSURE: level above {MAX_PRESSURE_LEVEL}: {levels}")
    return NodePressure(*levels)


def _goaway(stream_id: int, flags: int, payload: memoryview) -> Frame:
    reader = _Reader("GOAWAY", payload)
    last_stream_id, code = reader.unpack(_GOAWAY)
    if last_stream_id & _STREAM_BIT:
        raise FrameFormatError("GOAWAY: reserved bit of last_stream_id is set")
    rest = reader.rest()
    if len(rest) > MAX_GOAWAY_REASON:
        raise FrameFormatError(f"GOAWAY: reason longer than {MAX_GOAWAY_REASON} bytes")
    try:
        reason = bytes(rest).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameFormatError("GOAWAY: reason is not valid UTF-8") from None
    return Goaway(last_stream_id, error_code_from_int(code), reason)


def _hello(stream_id: int, flags: int, payload: memoryview) -> Frame:
    reader = _Reader("HELLO", payload)
    count = reader.u8()
    if not 1 <= count <= MAX_VERSIONS:
        raise FrameFormatError(f"HELLO: version count {count} outside 1..{MAX_VERSIONS}")
    versions = tuple(reader.u16() for _ in range(count))
    if 0 in versions:
        raise FrameFormatError("HELLO: version 0 is reserved")
    public_key = bytes(reader.take(PUBLIC_KEY_SIZE))
    nonce = bytes(reader.take(NONCE_SIZE))
    node_id = reader.text("node_id", reader.u8(), 1, MAX_NODE_ID)
    caps = reader.blob("capabilities", reader.u16(), 0, MAX_CAPABILITIES)
    record = reader.blob("node_record", reader.u16(), 0, MAX_NODE_RECORD)
    reader.finish()
    return Hello(versions, node_id, public_key, nonce, caps, record)


def _auth(stream_id: int, flags: int, payload: memoryview) -> Frame:
    if not 1 <= len(payload) <= MAX_SIGNATURE:
        raise FrameFormatError(f"AUTH: signature length {len(payload)} outside 1..{MAX_SIGNATURE}")
    return Auth(bytes(payload))


def _session_ready(stream_id: int, flags: int, payload: memoryview) -> Frame:
    _fixed("SESSION_READY", payload, _SESSION_READY.size)
    fields = _SESSION_READY.unpack(payload)
    max_frame_size = fields[1]
    if not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_CAP:
        raise FrameFormatError(
            f"SESSION_READY: max_frame_size {max_frame_size} outside "
            f"{MIN_MAX_FRAME_SIZE}..{MAX_FRAME_SIZE_CAP}"
        )
    return SessionReady(*fields)


_PayloadDecoder = Callable[[int, int, memoryview], Frame]

_DECODERS: dict[int, _PayloadDecoder] = {
    FrameType.DATA: _data,
    FrameType.OPEN_STREAM: _open_stream,
    FrameType.ACK: _ack,
    FrameType.STREAM_CREDIT: _stream_credit,
    FrameType.CLOSE_STREAM: _close_stream,
    FrameType.RESET_STREAM: _reset_stream,
    FrameType.PING: _ping,
    FrameType.PONG: _pong,
    FrameType.ROUTE_UPDATE: _route_update,
    FrameType.NODE_PRESSURE: _node_pressure,
    FrameType.GOAWAY: _goaway,
    FrameType.HELLO: _hello,
    FrameType.AUTH: _auth,
    FrameType.SESSION_READY: _session_ready,
}
assert _DECODERS.keys() == FRAME_CLASSES.keys()


def decode_frame(frame_type: int, flags: int, stream_id: int, payload: memoryview) -> Frame:
    """Validate one frame's header fields and decode its payload (the general path)."""
    if stream_id & _STREAM_BIT:
        raise FrameFormatError("reserved bit of the stream id is set")
    cls = FRAME_CLASSES.get(frame_type)
    if cls is None:
        if flags & _IGNORABLE:
            return UnknownFrame(frame_type, flags, stream_id, bytes(payload))
        raise UnknownFrameTypeError(f"unknown frame type {frame_type:#04x} without IGNORABLE")
    if flags & ~(cls.allowed_flags | _IGNORABLE):
        raise FrameFormatError(f"{cls.frame_type.name}: undefined flags {flags:#04x}")
    scope = cls.stream_scope
    if scope == STREAM_ZERO and stream_id != 0:
        name = cls.frame_type.name
        raise InvalidStreamIdError(f"{name} must be sent on stream 0, got stream {stream_id}")
    if scope == STREAM_NONZERO and stream_id == 0:
        name = cls.frame_type.name
        raise InvalidStreamIdError(f"{name} must be sent on a stream, got stream 0")
    return _DECODERS[frame_type](stream_id, flags, payload)


class FrameDecoder:
    """Turns a byte stream, in any chunking, into frames.

    ``max_frame_size`` bounds the payload a peer may announce; raise it (up to
    16 MiB - 1) with :meth:`set_max_frame_size` once SESSION_READY says so.
    """

    __slots__ = ("_buffer", "_error", "_needed", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = 0
        self.set_max_frame_size(max_frame_size)
        self._buffer = bytearray()
        self._needed = HEADER_SIZE
        self._error: RemoteProtocolError | None = None

    def set_max_frame_size(self, size: int) -> None:
        if not MIN_MAX_FRAME_SIZE <= size <= MAX_FRAME_SIZE_CAP:
            raise LocalProtocolError(
                f"max frame size {size} outside {MIN_MAX_FRAME_SIZE}..{MAX_FRAME_SIZE_CAP}"
            )
        self.max_frame_size = size

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode every complete frame in the bytes received so far."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        frames: list[Frame] = []
        if buffer and len(buffer) + len(data) < self._needed:
            buffer += data
            return frames
        chunk: bytes | memoryview
        if type(data) is bytes:
            owned = True
            chunk = b"".join((buffer, data)) if buffer else data  # one copy of both, not two
            buffer.clear()
        else:
            # The caller may reuse its buffer: DATA payloads are copied out of it one by one.
            owned = False
            chunk = data if type(data) is memoryview else memoryview(data)
        try:
            if buffer:  # only a view is fed while a frame is held back (bytes were joined)
                chunk = self._complete_buffered(cast(memoryview, chunk), frames)
            consumed = self._parse(chunk, owned, frames)
        except RemoteProtocolError as error:
            self._error = error
            raise
        if consumed < len(chunk):
            rest = memoryview(chunk)[consumed:]
            buffer += rest
            if len(rest) >= HEADER_SIZE:
                self._needed = HEADER_SIZE + (HEADER.unpack_from(rest)[0] >> 8)
            else:
                self._needed = HEADER_SIZE
        return frames

    def _complete_buffered(self, view: memoryview, frames: list[Frame]) -> memoryview:
        """Finish the held-back frame from the start of ``view``; return the rest of ``view``.

        Only that frame's bytes are joined (one copy of the new ones); what follows is
        parsed from ``view`` itself.  The caller checked that ``view`` completes it.
        """
        buffer = self._buffer
        start = 0
        if len(buffer) < HEADER_SIZE:
            start = HEADER_SIZE - len(buffer)
            buffer += view[:start]
            length = HEADER.unpack_from(buffer)[0] >> 8
            if length > self.max_frame_size:
                raise FrameSizeError(
                    f"frame of {length} bytes exceeds the maximum of {self.max_frame_size}"
                )
            self._needed = HEADER_SIZE + length
            if len(view) - start < length:
                buffer += view[start:]
                return view[len(view) :]
        end = start + self._needed - len(buffer)
        frame = b"".join((buffer, view[start:end]))
        buffer.clear()
        self._needed = HEADER_SIZE
        self._parse(frame, True, frames)
        return view[end:]

    def _parse(self, chunk: bytes | memoryview, owned: bool, frames: list[Frame]) -> int:
        """Decode the complete frames at the start of ``chunk``; return the bytes used.

        Unless ``owned``, a DATA payload is copied into ``bytes`` (``chunk`` is the
        caller's, reused after ``feed``); other frames copy what they keep anyway.
        """
        view = chunk if type(chunk) is memoryview else memoryview(chunk)
        size = len(chunk)
        limit = self.max_frame_size
        unpack_data = DATA_HEADER.unpack_from
        append = frames.append
        offset = 0
        # Fast path: a well-formed DATA frame that is complete in this chunk.
        while size - offset >= 17:
            word, flags, stream_id, data_offset = unpack_data(chunk, offset)
            length = word >> 8
            end = offset + HEADER_SIZE + length
            if (
                word & 0xFF == 0
                and 8 <= length <= limit
                and end <= size
                and not flags & _DATA_BAD_FLAGS
                and 0 < stream_id <= MAX_STREAM_ID
            ):
                payload = view[offset + 17 : end]
                append(Data(stream_id, data_offset, payload if owned else payload.tobytes(),
                            flags & 1 == 1))  # fmt: skip
                offset = end
                continue
            # The answers to DATA, as frequent as it in a bulk transfer's other direction.
            if word == ACK_WORD and not flags and 0 < stream_id <= MAX_STREAM_ID and end <= size:
                append(Ack(stream_id, data_offset, _U32.unpack_from(chunk, offset + 17)[0]))
                offset = end
                continue
            if word == _CREDIT_WORD and not flags and stream_id <= MAX_STREAM_ID:
                append(StreamCredit(stream_id, data_offset))  # 17 bytes: all here
                offset = end
                continue
            if length > limit:
                raise FrameSizeError(f"frame of {length} bytes exceeds the maximum of {limit}")
            if end > size:
                return offset
            frame = decode_frame(word & 0xFF, flags, stream_id, view[offset + HEADER_SIZE : end])
            append(frame if owned else _owned(frame))
            offset = end
        # General path: what is left is shorter than a DATA header.
        while size - offset >= HEADER_SIZE:
            word, flags, stream_id = HEADER.unpack_from(chunk, offset)
            length = word >> 8
            if length > limit:
                raise FrameSizeError(f"frame of {length} bytes exceeds the maximum of {limit}")
            end = offset + HEADER_SIZE + length
            if end > size:
                break
            frame = decode_frame(word & 0xFF, flags, stream_id, view[offset + HEADER_SIZE : end])
            append(frame if owned else _owned(frame))
            offset = end
        return offset


def _owned(frame: Frame) -> Frame:
    """``frame`` holding no view of the caller's buffer (only a DATA payload is a view)."""
    if type(frame) is Data and type(frame.payload) is memoryview:
        return Data(frame.stream_id, frame.offset, frame.payload.tobytes(), frame.end_stream)
    return frame
