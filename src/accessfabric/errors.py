"""The error registry of Fabric Data Session V1 and the typed exceptions that carry it.

Every protocol violation raises a :class:`ProtocolError` subclass whose
``error_code`` is the :class:`ErrorCode` that goes on the wire (in RESET_STREAM
or GOAWAY).  :class:`LocalProtocolError` means *this side misused the API*;
:class:`RemoteProtocolError` means *the peer misbehaved*.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Wire error codes (u32).  Unknown codes received from a peer are kept as ints."""

    NO_ERROR = 0x00
    PROTOCOL_ERROR = 0x01
    INTERNAL_ERROR = 0x02
    FLOW_CONTROL_ERROR = 0x03
    TIMEOUT = 0x04
    STREAM_CLOSED = 0x05
    FRAME_SIZE_ERROR = 0x06
    REFUSED_STREAM = 0x07
    CANCEL = 0x08
    UNSUPPORTED_VERSION = 0x09
    AUTHENTICATION_FAILED = 0x0A
    IDENTITY_MISMATCH = 0x0B
    ENHANCE_YOUR_CALM = 0x0C
    ROUTE_REJECTED = 0x0D
    SERVICE_UNAVAILABLE = 0x0E
    FRAME_FORMAT_ERROR = 0x0F
    UNKNOWN_FRAME_TYPE = 0x10
    INVALID_STREAM_ID = 0x11
    ACCESS_DENIED = 0x12


def error_code_from_int(value: int) -> ErrorCode | int:
    """Map a received code to :class:`ErrorCode`, keeping unknown codes as plain ints."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value


class ProtocolError(Exception):
    """Base of every fabric protocol error; ``error_code`` is what goes on the wire."""

    error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, error_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class FrameSizeError(RemoteProtocolError):
    """A frame is longer than the negotiated maximum, or a fixed-size payload has the wrong size."""

    error_code = ErrorCode.FRAME_SIZE_ERROR


class FrameFormatError(RemoteProtocolError):
    """A frame payload is malformed: bad field, reserved bit set, undefined flag, bad UTF-8."""

    error_code = ErrorCode.FRAME_FORMAT_ERROR


class UnknownFrameTypeError(RemoteProtocolError):
    """A frame of an unknown type arrived without the IGNORABLE flag."""

    error_code = ErrorCode.UNKNOWN_FRAME_TYPE


class InvalidStreamIdError(RemoteProtocolError):
    """A frame names a stream id it may not use (0 where one is needed, wrong parity, reuse)."""

    error_code = ErrorCode.INVALID_STREAM_ID


class FlowControlError(RemoteProtocolError):
    """The peer sent more than the credit it was granted."""

    error_code = ErrorCode.FLOW_CONTROL_ERROR


class StreamClosedError(RemoteProtocolError):
    """The peer sent a frame on a stream that is closed to it."""

    error_code = ErrorCode.STREAM_CLOSED


class UnsupportedVersionError(RemoteProtocolError):
    """The two sides share no protocol version."""

    error_code = ErrorCode.UNSUPPORTED_VERSION


class AuthenticationError(RemoteProtocolError):
    """The peer's AUTH proof did not verify."""

    error_code = ErrorCode.AUTHENTICATION_FAILED


class IdentityMismatchError(RemoteProtocolError):
    """The peer authenticated as a different node than the one we expected."""

    error_code = ErrorCode.IDENTITY_MISMATCH
