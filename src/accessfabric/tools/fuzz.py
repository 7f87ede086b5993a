"""A bounded mutation fuzzer for the frame codec: only ``ProtocolError`` may escape the decoder.

``python -m accessfabric.tools.fuzz --inputs N [--seed S] [--seconds T] [--vectors PATH]``

The seed corpus is random valid frames of every type (alone and as streams)
plus the hex of ``tests/vectors/frames.json`` when that file is found.  Each
input is a corpus entry with one to four mutations (bit flips, byte sets,
truncation, insertion, deletion, splicing, a huge or random length, a random
type, flags or reserved bit).  Every input is decoded twice, in one piece and
in a random chunking (bytes, bytearray and a memoryview of a buffer the
"caller" overwrites right after ``feed``), and checked for:

* nothing but :class:`~accessfabric.errors.ProtocolError` escapes;
* both decodings agree (the same frames, or the same error class);
* the decoder never buffers a frame longer than its ``max_frame_size``;
* every decoded frame encodes again and decodes to an equal frame.

Any other outcome prints the reproducing input as hex and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.wire.decoder import FrameDecoder
from accessfabric.wire.frames import (
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
    MAX_FRAME_SIZE_CAP,
    MAX_GOAWAY_REASON,
    MAX_KEY_EXCHANGE,
    MAX_NODE_ID,
    MAX_RESUME_TOKEN,
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

DEFAULT_VECTORS = Path("tests/vectors/frames.json")

_UNKNOWN_TYPES = [t for t in range(256) if t not in FrameType._value2member_map_]
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-._/:é€日本😀"


class FuzzFailure(Exception):
    """An input made the codec do something other than decode or raise ProtocolError."""

    def __init__(self, message: str, data: bytes, splits: Sequence[int]) -> None:
        super().__init__(message)
        self.data = data
        self.splits = list(splits)


# --- random valid frames -----------------------------------------------------------------


def _u64(rng: random.Random) -> int:
    return rng.choice((0, 1, MAX_U64, rng.getrandbits(16), rng.getrandbits(64)))


def _u32(rng: random.Random) -> int:
    return rng.choice((0, 1, MAX_U32, rng.getrandbits(8), rng.getrandbits(32)))


def _stream(rng: random.Random) -> int:
    return rng.choice((1, 2, 3, MAX_STREAM_ID, rng.randint(1, 1000), rng.randint(1, MAX_STREAM_ID)))


def _blob(rng: random.Random, low: int, high: int) -> bytes:
    size = rng.randint(low, min(high, rng.choice((low + 8, low + 64, high))))
    return rng.randbytes(size)


def _text(rng: random.Random, low: int, high: int) -> str:
    """A string whose UTF-8 encoding has ``low..high`` bytes."""
    target = rng.randint(low, min(high, rng.choice((low + 8, high))))
    chars: list[str] = []
    size = 0
    while size < target:
        char = rng.choice(_ALPHABET)
        width = len(char.encode("utf-8"))
        if size + width > high:
            char, width = "x", 1
        chars.append(char)
        size += width
    return "".join(chars)


def _error_code(rng: random.Random) -> ErrorCode | int:
    return rng.choice((rng.choice(list(ErrorCode)), _u32(rng)))


def random_frame(rng: random.Random, frame_type: int | None = None) -> Frame:
    """A random valid frame; ``frame_type`` None also allows an ignorable unknown frame."""
    if frame_type is None:
        frame_type = rng.choice([*FrameType, -1])
    if frame_type == FrameType.DATA:
        return Data(_stream(rng), _u64(rng), _blob(rng, 0, 1500), rng.random() < 0.3)
    if frame_type == FrameType.OPEN_STREAM:
        return OpenStream(
            _stream(rng),
            _text(rng, 1, MAX_SERVICE_NAME),
            rng.choice(list(TrafficClass)),
            _u64(rng),
            _u64(rng),
            rng.random() < 0.3,
            _blob(rng, 0, MAX_RESUME_TOKEN),
            _blob(rng, 0, MAX_KEY_EXCHANGE),
            _blob(rng, 0, 300),
        )
    if frame_type == FrameType.ACK:
        return Ack(_stream(rng), _u64(rng), _u32(rng))
    if frame_type == FrameType.STREAM_CREDIT:
        return StreamCredit(rng.choice((0, _stream(rng))), _u64(rng))
    if frame_type == FrameType.CLOSE_STREAM:
        return CloseStream(_stream(rng), _u64(rng))
    if frame_type == FrameType.RESET_STREAM:
        return ResetStream(_stream(rng), _error_code(rng))
    if frame_type == FrameType.PING:
        return Ping(_u64(rng))
    if frame_type == FrameType.PONG:
        return Pong(_u64(rng))
    if frame_type == FrameType.ROUTE_UPDATE:
        return RouteUpdate(_blob(rng, 1, 600))
    if frame_type == FrameType.NODE_PRESSURE:
        return NodePressure(*(rng.randint(0, 100) for _ in range(4)))
    if frame_type == FrameType.GOAWAY:
        return Goaway(
            rng.randint(0, MAX_STREAM_ID), _error_code(rng), _text(rng, 0, MAX_GOAWAY_REASON)
        )
    if frame_type == FrameType.HELLO:
        versions = tuple(rng.randint(1, 0xFFFF) for _ in range(rng.randint(1, MAX_VERSIONS)))
        return Hello(
            versions,
            _text(rng, 1, MAX_NODE_ID),
            rng.randbytes(PUBLIC_KEY_SIZE),
            rng.randbytes(NONCE_SIZE),
            _blob(rng, 0, 200),
            _blob(rng, 0, 200),
        )
    if frame_type == FrameType.AUTH:
        return Auth(_blob(rng, 1, MAX_SIGNATURE))
    if frame_type == FrameType.SESSION_READY:
        return SessionReady(
            rng.randint(0, 0xFFFF),
            rng.choice((MIN_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CAP)),
            _u32(rng),
            _u32(rng),
            _u32(rng),
            _u64(rng),
            _u64(rng),
        )
    return UnknownFrame(
        rng.choice(_UNKNOWN_TYPES),
        Flags.IGNORABLE | rng.getrandbits(7),
        rng.randint(0, MAX_STREAM_ID),
        _blob(rng, 0, 100),
    )


def random_stream(rng: random.Random, count: int) -> bytes:
    """``count`` random valid frames back to back."""
    return b"".join(random_frame(rng).to_bytes() for _ in range(count))


# --- mutations ---------------------------------------------------------------------------


def _flip_bit(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _set_byte(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice(
            (0x00, 0x01, 0x7F, 0x80, 0xFF, rng.getrandbits(8))
        )


def _truncate(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    del data[rng.randint(0, len(data)) :]


def _delete(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    start = rng.randint(0, len(data))
    del data[start : start + rng.randint(1, 16)]


def _insert(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    at = rng.randint(0, len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 16))


def _splice(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    other = rng.choice(corpus)
    start = rng.randint(0, len(other))
    piece = other[start : start + rng.randint(1, 64)]
    at = rng.randint(0, len(data))
    if rng.random() < 0.5:
        data[at:at] = piece
    else:
        data[at : at + len(piece)] = piece


def _header_at(rng: random.Random, data: bytearray) -> int:
    """A position that is often a frame header (the first one), else anywhere."""
    if rng.random() < 0.6 or len(data) <= HEADER_SIZE:
        return 0
    return rng.randrange(len(data) - HEADER_SIZE)


def _huge_length(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        at = _header_at(rng, data)
        length = rng.choice(
            (
                MAX_FRAME_SIZE_CAP,
                DEFAULT_MAX_FRAME_SIZE,
                DEFAULT_MAX_FRAME_SIZE + 1,
                MIN_MAX_FRAME_SIZE + 1,
                rng.getrandbits(24),
            )
        )
        data[at : at + 3] = length.to_bytes(3, "big")


def _small_length(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        at = _header_at(rng, data)
        old = int.from_bytes(data[at : at + 3], "big")
        new = min(MAX_FRAME_SIZE_CAP, max(0, old + rng.randint(-9, 9)))
        data[at : at + 3] = new.to_bytes(3, "big")


def _frame_type(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        data[_header_at(rng, data) + 3] = rng.choice(
            (rng.choice(list(FrameType)), rng.getrandbits(8))
        )


def _flags(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        data[_header_at(rng, data) + 4] ^= rng.choice((Flags.IGNORABLE, 1 << rng.randrange(8)))


def _reserved_bit(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        data[_header_at(rng, data) + 5] ^= 0x80


def _stream_id(rng: random.Random, data: bytearray, corpus: Sequence[bytes]) -> None:
    if len(data) >= HEADER_SIZE:
        at = _header_at(rng, data) + 5
        data[at : at + 4] = rng.choice((0, 1, MAX_STREAM_ID, rng.getrandbits(32))).to_bytes(
            4, "big"
        )


_Mutation = Callable[[random.Random, bytearray, Sequence[bytes]], None]

MUTATIONS: tuple[_Mutation, ...] = (
    _flip_bit,
    _flip_bit,
    _set_byte,
    _set_byte,
    _truncate,
    _delete,
    _insert,
    _splice,
    _huge_length,
    _small_length,
    _frame_type,
    _flags,
    _reserved_bit,
    _stream_id,
)


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """One to four random mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        rng.choice(MUTATIONS)(rng, out, corpus)
    return bytes(out)


# --- one input ---------------------------------------------------------------------------


_Outcome = tuple[list[Frame], type[ProtocolError] | None]


def _decode_whole(data: bytes, max_frame_size: int) -> _Outcome:
    decoder = FrameDecoder(max_frame_size)
    try:
        frames = decoder.feed(data)
    except ProtocolError as error:
        return [], type(error)
    _check_buffered(decoder)
    return frames, None


def _decode_chunked(
    rng: random.Random, data: bytes, splits: Sequence[int], max_frame_size: int
) -> _Outcome:
    decoder = FrameDecoder(max_frame_size)
    frames: list[Frame] = []
    scratch = bytearray()
    start = 0
    for end in [*splits, len(data)]:
        piece = data[start:end]
        start = end
        kind = rng.randrange(3)
        try:
            if kind == 0:
                frames += decoder.feed(piece)
            elif kind == 1:
                frames += decoder.feed(bytearray(piece))
            else:
                # A caller that reuses its receive buffer right after feed().
                scratch[:] = piece
                frames += decoder.feed(memoryview(scratch))
                scratch[:] = bytes(len(scratch)) if rng.random() < 0.5 else b"\xa5" * len(scratch)
        except ProtocolError as error:
            return [], type(error)
        _check_buffered(decoder)
    return frames, None


def _check_buffered(decoder: FrameDecoder) -> None:
    if decoder.buffered >= HEADER_SIZE + decoder.max_frame_size:
        raise AssertionError(
            f"decoder buffers {decoder.buffered} bytes with max_frame_size {decoder.max_frame_size}"
        )


def _check_reencode(frames: list[Frame], max_frame_size: int) -> None:
    for frame in frames:
        again = FrameDecoder(max_frame_size).feed(frame.to_bytes())
        if again != [frame]:
            raise AssertionError(f"{frame!r} re-encodes and decodes to {again!r}")


def _random_splits(rng: random.Random, size: int) -> list[int]:
    if size < 2:
        return []
    style = rng.randrange(4)
    if style == 0:  # one byte at a time
        return list(range(1, size))
    if style == 1:
        return [size // 2]
    count = rng.randint(1, min(size - 1, 24))
    return sorted(rng.sample(range(1, size), count))


def run_one(rng: random.Random, data: bytes) -> bool:
    """Check one input; return True if it was a protocol error.  Raise FuzzFailure otherwise."""
    max_frame_size = DEFAULT_MAX_FRAME_SIZE if rng.random() < 0.8 else MIN_MAX_FRAME_SIZE
    splits = _random_splits(rng, len(data))
    try:
        whole = _decode_whole(data, max_frame_size)
        chunked = _decode_chunked(rng, data, splits, max_frame_size)
        if whole[1] is not chunked[1]:
            raise AssertionError(f"one piece gives {whole[1]}, chunked gives {chunked[1]}")
        if whole[0] != chunked[0]:
            raise AssertionError("one piece and chunked decoding give different frames")
        _check_reencode(whole[0], max_frame_size)
    except Exception as error:  # anything but ProtocolError is the finding
        detail = "".join(traceback.format_exception(error))
        raise FuzzFailure(detail, data, splits) from error
    return whole[1] is not None


# --- the campaign ------------------------------------------------------------------------


def load_vector_hex(path: Path) -> list[bytes]:
    """Every ``hex`` value in a test-vector file (valid and malformed)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    found: list[bytes] = []
    for section in ("valid", "noncanonical", "malformed"):
        for vector in document.get(section, []):
            found.append(bytes.fromhex(vector["hex"]))
    return found


def build_corpus(rng: random.Random, vectors: list[bytes]) -> list[bytes]:
    corpus = list(vectors)
    for frame_type in [*FrameType, -1]:
        for _ in range(8):
            corpus.append(random_frame(rng, frame_type).to_bytes())
    for _ in range(200):
        corpus.append(random_stream(rng, rng.randint(2, 8)))
    return corpus


def campaign(
    inputs: int, seed: int, seconds: float | None, vectors: list[bytes]
) -> tuple[int, int, float]:
    """Run up to ``inputs`` inputs (or ``seconds``); return (inputs, protocol errors, seconds)."""
    rng = random.Random(seed)
    corpus = build_corpus(rng, vectors)
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    errors = 0
    done = 0
    while done < inputs:
        roll = rng.random()
        if roll < 0.05:
            data = rng.randbytes(rng.randint(0, 64))
        elif roll < 0.15:
            data = random_stream(rng, rng.randint(1, 6))  # fresh valid input, no mutation
        else:
            data = mutate(rng, rng.choice(corpus), corpus)
        errors += run_one(rng, data)
        done += 1
        if deadline is not None and done % 256 == 0 and time.monotonic() >= deadline:
            break
    return done, errors, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m accessfabric.tools.fuzz",
        description="Mutation-fuzz the frame decoder; only ProtocolError may escape it.",
    )
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument(
        "--vectors",
        type=Path,
        default=DEFAULT_VECTORS,
        help="test-vector file added to the seed corpus when present",
    )
    args = parser.parse_args(argv)
    seed: int = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    vectors = load_vector_hex(args.vectors) if args.vectors.is_file() else []
    print(f"fuzz: seed {seed}, {len(vectors)} vectors in the seed corpus", flush=True)
    try:
        done, errors, elapsed = campaign(args.inputs, seed, args.seconds, vectors)
    except FuzzFailure as failure:
        print(f"fuzz: CRASH (seed {seed})", file=sys.stderr)
        print(f"input hex: {failure.data.hex()}", file=sys.stderr)
        print(f"chunk boundaries: {failure.splits}", file=sys.stderr)
        print(str(failure), file=sys.stderr)
        print("fuzz: 1 crashes", flush=True)
        return 1
    print(f"fuzz: {done} inputs, {errors} protocol errors, 0 crashes, {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
