"""Golden vectors both ways: ``tests/vectors/frames.json`` bytes <-> fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from accessfabric.errors import ErrorCode, ProtocolError, RemoteProtocolError
from accessfabric.wire import (
    Ack,
    Auth,
    CloseStream,
    Data,
    Frame,
    FrameDecoder,
    FrameType,
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
    TrafficClass,
    UnknownFrame,
    encode,
    encode_into,
)
from accessfabric.wire.limits import HEADER_SIZE, MAX_FRAME_SIZE_CAP

VECTOR_DIR = Path(__file__).parents[1] / "vectors"
DOCUMENT: dict[str, Any] = json.loads((VECTOR_DIR / "frames.json").read_text(encoding="utf-8"))


def _code(value: str | int) -> ErrorCode | int:
    return ErrorCode[value] if isinstance(value, str) else value


def frame_from_vector(vector: dict[str, Any]) -> Frame:
    """Build the frame a vector's language-neutral ``fields`` describe."""
    f = vector["fields"]
    h = bytes.fromhex
    kind = vector["type"]
    if kind == "DATA":
        return Data(f["stream_id"], f["offset"], h(f["payload"]), f["end_stream"])
    if kind == "OPEN_STREAM":
        return OpenStream(
            f["stream_id"],
            f["service"],
            TrafficClass[f["traffic_class"]],
            f["route_id"],
            f["start_offset"],
            f["resume"],
            h(f["resume_token"]),
            h(f["key_exchange"]),
            h(f["route_lease"]),
        )
    if kind == "ACK":
        return Ack(f["stream_id"], f["offset"], f["window"])
    if kind == "STREAM_CREDIT":
        return StreamCredit(f["stream_id"], f["max_offset"])
    if kind == "CLOSE_STREAM":
        return CloseStream(f["stream_id"], f["final_offset"])
    if kind == "RESET_STREAM":
        return ResetStream(f["stream_id"], _code(f["error_code"]))
    if kind == "PING":
        return Ping(f["opaque"])
    if kind == "PONG":
        return Pong(f["opaque"])
    if kind == "ROUTE_UPDATE":
        return RouteUpdate(h(f["lease"]))
    if kind == "NODE_PRESSURE":
        return NodePressure(f["queue"], f["cpu"], f["memory"], f["network"])
    if kind == "GOAWAY":
        return Goaway(f["last_stream_id"], _code(f["error_code"]), f["reason"])
    if kind == "HELLO":
        return Hello(
            tuple(f["versions"]),
            f["node_id"],
            h(f["public_key"]),
            h(f["nonce"]),
            h(f["capabilities"]),
            h(f["node_record"]),
        )
    if kind == "AUTH":
        return Auth(h(f["signature"]))
    if kind == "SESSION_READY":
        return SessionReady(
            f["version"],
            f["max_frame_size"],
            f["initial_stream_window"],
            f["initial_session_window"],
            f["max_concurrent_streams"],
            f["route_epoch"],
            f["peer_epoch"],
        )
    if kind == "UNKNOWN":
        return UnknownFrame(f["type_code"], f["flags"], f["stream_id"], h(f["payload"]))
    raise AssertionError(f"unknown vector type {kind}")


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


VALID = DOCUMENT["valid"]
NONCANONICAL = DOCUMENT["noncanonical"]
MALFORMED = DOCUMENT["malformed"]


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    frames = FrameDecoder(MAX_FRAME_SIZE_CAP).feed(data)
    assert frames == [frame_from_vector(vector)]
    (frame,) = frames
    if isinstance(frame, UnknownFrame):
        assert frame.type_code == vector["type_code"]
    else:
        assert frame.frame_type == vector["type_code"]


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_fields_encode_to_its_hex(vector: dict[str, Any]) -> None:
    frame = frame_from_vector(vector)
    assert encode(frame).hex() == vector["hex"]
    out = bytearray(b"prefix")
    encode_into(frame, out)
    assert bytes(out) == b"prefix" + bytes.fromhex(vector["hex"])


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_header_fields(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    assert int.from_bytes(data[0:3], "big") == vector["length"] == len(data) - HEADER_SIZE
    assert data[3] == vector["type_code"]
    assert data[4] == vector["flags"]
    assert int.from_bytes(data[5:9], "big") == vector["stream_id"]


@pytest.mark.parametrize("vector", NONCANONICAL, ids=_ids(NONCANONICAL))
def test_noncanonical_vector_decodes_and_reencodes_canonically(vector: dict[str, Any]) -> None:
    frame = frame_from_vector(vector)
    assert FrameDecoder().feed(bytes.fromhex(vector["hex"])) == [frame]
    assert encode(frame).hex() == vector["canonical_hex"]


@pytest.mark.parametrize("vector", MALFORMED, ids=_ids(MALFORMED))
def test_malformed_vector_raises_its_error_code(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder(vector["max_frame_size"])
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(bytes.fromhex(vector["hex"]))
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.error_code.name == vector["error"]
    assert caught.value.error_code == vector["error_value"]


def test_every_frame_type_has_a_valid_vector() -> None:
    types = {v["type"] for v in VALID}
    assert types >= {t.name for t in FrameType} | {"UNKNOWN"}


def test_every_decoder_error_code_has_a_malformed_vector() -> None:
    decoder_codes = {
        "FRAME_SIZE_ERROR",
        "FRAME_FORMAT_ERROR",
        "UNKNOWN_FRAME_TYPE",
        "INVALID_STREAM_ID",
    }
    assert {v["error"] for v in MALFORMED} == decoder_codes
    assert len(MALFORMED) >= 20


def test_registries_in_the_file_match_the_code() -> None:
    registries = DOCUMENT["registries"]
    assert registries["frame_types"] == {t.name: int(t) for t in FrameType}
    assert registries["traffic_classes"] == {c.name: int(c) for c in TrafficClass}
    assert registries["error_codes"] == {c.name: int(c) for c in ErrorCode}


def test_vector_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_frames", VECTOR_DIR / "make_frames.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (VECTOR_DIR / "frames.json").read_text(encoding="utf-8")
    assert module.render(module.build()) == text, "run python tests/vectors/make_frames.py"
