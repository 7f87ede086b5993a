"""Framing checks: every class of malformed frame, each with its code (after SESSION_READY)."""

from __future__ import annotations

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import raw_frame
from accessfabric.errors import ErrorCode
from accessfabric.wire import frames as fr

FORMAT = ErrorCode.FRAME_FORMAT_ERROR
SIZE = ErrorCode.FRAME_SIZE_ERROR


def _open_payload(service: bytes, traffic_class: int = 3) -> bytes:
    fixed = bytes((traffic_class,)) + bytes(16)
    return fixed + bytes((len(service),)) + service + b"\x00" + bytes(4)


# (id, title, frame bytes, expected code)
MALFORMED: list[tuple[str, str, bytes, ErrorCode]] = [
    ("frame.too-large", "a header announcing more than the max frame size",
     (16777215).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"), SIZE),
    ("frame.reserved-bit", "the R bit of the stream id set",
     raw_frame(0x06, 0, 0x80000000, bytes(8)), FORMAT),
    ("frame.unknown-type", "an unknown type (0x20) without IGNORABLE",
     raw_frame(0x20, 0, 0, b"x"), ErrorCode.UNKNOWN_FRAME_TYPE),
    ("frame.undefined-flag", "PING with flag 0x01", raw_frame(0x06, 0x01, 0, bytes(8)), FORMAT),
    ("frame.stream-on-session-frame", "PING on stream 1",
     raw_frame(0x06, 0, 1, bytes(8)), ErrorCode.INVALID_STREAM_ID),
    ("frame.session-on-stream-frame", "DATA on stream 0",
     raw_frame(0x00, 0, 0, bytes(8)), ErrorCode.INVALID_STREAM_ID),
    ("frame.fixed-size", "PING with 7 payload bytes", raw_frame(0x06, 0, 0, bytes(7)), SIZE),
    ("frame.ack-size", "ACK with 8 payload bytes", raw_frame(0x02, 0, 1, bytes(8)), SIZE),
    ("frame.data-short", "DATA with 4 payload bytes", raw_frame(0x00, 0, 1, bytes(4)), SIZE),
    ("frame.open-truncated", "OPEN_STREAM cut inside its service name",
     raw_frame(0x01, 0, 1, bytes((3,)) + bytes(16) + b"\x04ec"), FORMAT),
    ("frame.open-trailing", "OPEN_STREAM with a byte after Route Lease",
     raw_frame(0x01, 0, 1, _open_payload(b"echo") + b"\x00"), FORMAT),
    ("frame.traffic-class", "OPEN_STREAM with traffic class 9",
     raw_frame(0x01, 0, 1, _open_payload(b"echo", 9)), FORMAT),
    ("frame.bad-utf8", "OPEN_STREAM whose service is not UTF-8",
     raw_frame(0x01, 0, 1, _open_payload(b"\xc3\x28")), FORMAT),
    ("frame.empty-service", "OPEN_STREAM with an empty service",
     raw_frame(0x01, 0, 1, _open_payload(b"")), FORMAT),
    ("frame.pressure-level", "NODE_PRESSURE with a level of 101",
     raw_frame(0x09, 0, 0, bytes((101, 0, 0, 0))), FORMAT),
    ("frame.goaway-short", "GOAWAY with 7 payload bytes", raw_frame(0x0A, 0, 0, bytes(7)), FORMAT),
    ("frame.goaway-reserved", "GOAWAY with its last-stream-id R bit set",
     raw_frame(0x0A, 0, 0, b"\x80" + bytes(7)), FORMAT),
    ("frame.route-update-empty", "an empty ROUTE_UPDATE", raw_frame(0x08, 0, 0, b""), FORMAT),
]  # fmt: skip


def _malformed_check(check_id: str, title: str, frame: bytes, code: ErrorCode) -> None:
    async def body(target: Target) -> str:
        async with target.session() as peer:
            peer.send(frame)
            return await peer.expect_goaway(code)

    check("framing", check_id, title, f"GOAWAY {code.name}")(body)


for _case in MALFORMED:
    _malformed_check(*_case)


@check("framing", "frame.unknown-ignorable", "an unknown type (0x20) with IGNORABLE",
       "ignored; the session lives on")  # fmt: skip
async def unknown_ignorable(target: Target) -> str:
    async with target.session() as peer:
        peer.send(raw_frame(0x20, 0x80, 5, b"anything"))
        await peer.expect_alive()
        return "ignored"


@check("framing", "frame.ignorable-known", "IGNORABLE on a known type (PING)",
       "accepted as PING")  # fmt: skip
async def ignorable_known(target: Target) -> str:
    async with target.session() as peer:
        peer.send(raw_frame(0x06, 0x80, 0, (77).to_bytes(8, "big")))
        frame = await peer.expect_type(fr.Pong)
        return f"PONG {frame.opaque}"


@check("framing", "frame.byte-at-a-time", "a PING delivered one byte per write",
       "PONG")  # fmt: skip
async def byte_at_a_time(target: Target) -> str:
    async with target.session() as peer:
        for byte in fr.Ping(1234).to_bytes():
            peer.send(bytes((byte,)))
            await peer.writer.drain()
        frame = await peer.expect_type(fr.Pong)
        return f"PONG {frame.opaque}"
