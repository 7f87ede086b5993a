"""Codec benchmark: DATA frames/s through the real encoder and decoder beside a bare struct loop.

For each DATA payload size (1400 B, 16 KiB, 64 KiB of stream bytes; the frame
payload is 8 bytes more for the offset):

* decode: a ``FrameDecoder`` is fed ~256 KiB chunks of back-to-back DATA frames
  (as a socket read would deliver them), against a bare loop that does
  ``struct.unpack_from`` of the 17-byte DATA header and appends a memoryview
  slice of the payload -- the least any Python decoder has to do;
* encode: ``Frame.encode_into`` of ready ``Data`` objects into one bytearray,
  against a bare loop of ``struct.pack`` of the header and bytearray
  concatenation of the payload.

Each figure is the best of several rounds, with the measured and the baseline
rounds interleaved so both see the same machine noise; the garbage collector is
off while timing (as ``timeit`` does).
"""

from __future__ import annotations

import gc
import platform
import struct
import sys
import time
from collections.abc import Callable

from accessfabric.bench.progress import note
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.wire.decoder import FrameDecoder
from accessfabric.wire.frames import Data
from accessfabric.wire.limits import MAX_FRAME_SIZE_CAP

SIZES = (1400, 16 * 1024, 64 * 1024)
CHUNK_TARGET = 256 * 1024
BATCH_TARGET = 256 * 1024
_DATA_HEADER = struct.Struct(">IBIQ")


def _label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _best_rate(
    work: Callable[[], int], baseline: Callable[[], int], rounds: int, round_seconds: float
) -> tuple[float, float]:
    """Best frames/s of ``work`` and of ``baseline``; each call returns the frames it handled."""

    def one_round(func: Callable[[], int]) -> float:
        frames = 0
        started = time.perf_counter()
        deadline = started + round_seconds
        while True:
            frames += func()
            now = time.perf_counter()
            if now >= deadline:
                return frames / (now - started)

    best_work = best_base = 0.0
    enabled = gc.isenabled()
    gc.disable()
    try:
        work()  # warm up both paths
        baseline()
        for _ in range(rounds):
            best_base = max(best_base, one_round(baseline))
            best_work = max(best_work, one_round(work))
    finally:
        if enabled:
            gc.enable()
    return best_work, best_base


def _data_frames(size: int, count: int) -> list[Data]:
    payload = bytes(i % 251 for i in range(size))
    return [Data(1 + 2 * (i % 8), i * size, payload, False) for i in range(count)]


def _decode_pair(size: int) -> tuple[Callable[[], int], Callable[[], int]]:
    frames = _data_frames(size, max(2, CHUNK_TARGET // (size + 17)))
    chunk = b"".join(frame.to_bytes() for frame in frames)
    count = len(frames)
    decoder = FrameDecoder(MAX_FRAME_SIZE_CAP)
    feed = decoder.feed

    def decode() -> int:
        return len(feed(chunk))

    unpack_from = _DATA_HEADER.unpack_from

    def bare() -> int:
        view = memoryview(chunk)
        out: list[memoryview] = []
        append = out.append
        offset = 0
        end_of_chunk = len(chunk)
        while offset < end_of_chunk:
            word, _flags, _stream_id, _data_offset = unpack_from(chunk, offset)
            end = offset + 9 + (word >> 8)
            append(view[offset + 17 : end])
            offset = end
        return len(out)

    assert decode() == bare() == count
    return decode, bare


def _encode_pair(size: int) -> tuple[Callable[[], int], Callable[[], int]]:
    frames = _data_frames(size, max(2, BATCH_TARGET // (size + 17)))
    fields = [(f.stream_id, f.offset, bytes(f.payload)) for f in frames]
    count = len(frames)

    def encode() -> int:
        out = bytearray()
        for frame in frames:
            frame.encode_into(out)
        return count

    pack = _DATA_HEADER.pack

    def bare() -> int:
        out = bytearray()
        for stream_id, offset, payload in fields:
            out += pack((len(payload) + 8) << 8, 0, stream_id, offset)
            out += payload
        return count

    check_a = bytearray()
    for frame in frames:
        frame.encode_into(check_a)
    check_b = b"".join(pack((len(p) + 8) << 8, 0, s, o) + p for s, o, p in fields)
    assert check_a == check_b
    return encode, bare


def run(quick: bool) -> BenchReport:
    """Measure DATA decode and encode frames/s at each size beside the bare struct loops."""
    rounds, round_seconds = (3, 0.15) if quick else (7, 0.4)
    report = BenchReport("codec")
    for size in SIZES:
        label = _label(size)
        note(f"DATA {label}")
        decode, bare_decode = _decode_pair(size)
        value, base = _best_rate(decode, bare_decode, rounds, round_seconds)
        report.add(
            BenchResult(
                metric=f"decode DATA {label}",
                value=round(value, 1),
                unit="frames/s",
                baseline_metric=f"bare unpack_from + slice {label}",
                baseline_value=round(base, 1),
            )
        )
        encode, bare_encode = _encode_pair(size)
        value, base = _best_rate(encode, bare_encode, rounds, round_seconds)
        report.add(
            BenchResult(
                metric=f"encode_into DATA {label}",
                value=round(value, 1),
                unit="frames/s",
                baseline_metric=f"bare pack + concat {label}",
                baseline_value=round(base, 1),
            )
        )
    report.notes = {
        "python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "machine": f"{platform.machine()}, {platform.system()}",
        "method": f"best of {rounds} interleaved rounds of {round_seconds} s, gc off; "
        f"decode is fed ~{CHUNK_TARGET // 1024} KiB chunks of back-to-back DATA frames",
        "sizes": "DATA stream bytes per frame; the frame payload is 8 bytes more (offset)",
    }
    return report
