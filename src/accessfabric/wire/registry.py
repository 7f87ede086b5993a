"""Registries of Fabric Data Session V1: frame types, flags, traffic classes.

The numbers are the wire contract; never renumber, only add.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class FrameType(IntEnum):
    """The u8 frame type in every frame header."""

    DATA = 0x00
    OPEN_STREAM = 0x01
    ACK = 0x02
    STREAM_CREDIT = 0x03
    CLOSE_STREAM = 0x04
    RESET_STREAM = 0x05
    PING = 0x06
    PONG = 0x07
    ROUTE_UPDATE = 0x08
    NODE_PRESSURE = 0x09
    GOAWAY = 0x0A
    HELLO = 0x10
    AUTH = 0x11
    SESSION_READY = 0x12


class Flags(IntFlag):
    """The u8 flags in every frame header.  Which flags a type allows is in ``frames.py``."""

    NONE = 0x00
    END_STREAM = 0x01  # DATA: the sender's last bytes on this stream
    RESUME = 0x02  # OPEN_STREAM: continues an end-to-end stream from ``start_offset``
    IGNORABLE = 0x80  # any frame: a receiver that does not know the type may drop it


class TrafficClass(IntEnum):
    """Scheduling class of a stream, in priority order (lower value is served first)."""

    CONTROL = 0
    DNS = 1
    INTERACTIVE = 2
    RELIABLE = 3
    BULK = 4
    DROPPABLE = 5

    @classmethod
    def from_name(cls, name: str) -> TrafficClass:
        """Parse a lower-case class name as used in config files and the CLI."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(c.name.lower() for c in cls)
            raise ValueError(f"unknown traffic class {name!r} (choose from {choices})") from None


PROTOCOL_VERSION = 2
"""The only Fabric Data Session version this implementation speaks.

Version 2 has the frames of version 1; AUTH binds the RFC 9266 ``tls-exporter`` channel
binding instead of ``tls-unique`` (ADR 0020), so a version-1 node and a version-2 node share
no version and end the handshake with UNSUPPORTED_VERSION instead of a mysterious
AUTHENTICATION_FAILED."""
