"""``accessfabric bench session``: two paired sessions in one process, no sockets.

Figures: DATA frames/s at 1400 B and bulk MB/s with 64 KiB frames through the
pair (send, schedule, encode, decode, deliver, ACK, credit), each beside the
codec alone doing the same frames in the same run (encode + decode only).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable

from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.session import DataReceived, Session, SessionConfig
from accessfabric.wire import Data, Frame, FrameDecoder, TrafficClass, encode_many
from accessfabric.wire.limits import MAX_FRAME_SIZE_CAP

_FRAME_64K = 64 * 1024


def _pair(max_frame_size: int) -> tuple[Session, Session]:
    config = SessionConfig(
        max_frame_size=max_frame_size,
        initial_stream_window=16 << 20,
        max_stream_window=64 << 20,
        initial_session_window=64 << 20,
        max_session_window=256 << 20,
        max_stream_send_buffer=64 << 20,
        keepalive_interval=None,
        pacing_target_delay=None,
    )
    a_key, b_key = NodeKey.generate(), NodeKey.generate()
    a = Session(
        dialer=True,
        authenticator=Ed25519Authenticator(a_key),
        random_bytes=secrets.token_bytes,
        config=config,
        now=0.0,
    )
    b = Session(
        dialer=False,
        authenticator=Ed25519Authenticator(b_key),
        random_bytes=secrets.token_bytes,
        config=config,
        now=0.0,
    )
    for _ in range(4):
        b.receive_data(a.data_to_send(now=0.0), 0.0)
        a.receive_data(b.data_to_send(now=0.0), 0.0)
    return a, b


def _through_pair(payload_size: int, total: int, max_frame_size: int) -> tuple[float, int]:
    """Seconds to move ``total`` bytes in ``payload_size`` writes; frames delivered."""
    a, b = _pair(max_frame_size)
    stream = a.open_stream("bench", TrafficClass.BULK)
    piece = os.urandom(payload_size)
    writes = total // payload_size
    batch = max(1, (4 << 20) // payload_size)
    frames = 0
    started = time.perf_counter()
    sent = 0
    while sent < writes:
        for _ in range(min(batch, writes - sent)):
            a.send_data(stream, piece)
        sent += min(batch, writes - sent)
        while True:
            out = a.data_to_send(1 << 20, now=0.0)
            if not out:
                break
            for event in b.receive_data(out, 0.0):
                if type(event) is DataReceived:
                    frames += 1
                    b.acknowledge_received(event.stream_id, len(event.data))
            back = b.data_to_send(now=0.0)
            if back:
                a.receive_data(back, 0.0)
    return time.perf_counter() - started, frames


def _codec_only(payload_size: int, total: int) -> float:
    """Seconds for the codec alone to encode and decode the same DATA frames."""
    piece = os.urandom(payload_size)
    count = total // payload_size
    batch = max(1, (1 << 20) // (payload_size + 17))
    frames: list[Frame] = [Data(1, i * payload_size, piece) for i in range(batch)]
    decoder = FrameDecoder(max(_FRAME_64K, min(MAX_FRAME_SIZE_CAP, payload_size + 8)))
    started = time.perf_counter()
    done = 0
    while done < count:
        decoder.feed(bytes(encode_many(frames)))
        done += batch
    return time.perf_counter() - started


def _best(rounds: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(rounds))


def run(quick: bool) -> BenchReport:
    report = BenchReport("session")
    rounds = 2 if quick else 4
    small_total = (24 if quick else 96) << 20
    bulk_total = (256 if quick else 1024) << 20

    def small() -> float:
        elapsed, frames = _through_pair(1400, small_total, _FRAME_64K)
        return elapsed / frames

    per_frame = _best(rounds, small)
    codec_per_frame = _best(rounds, lambda: _codec_only(1400, small_total) / (small_total // 1400))
    report.add(
        BenchResult(
            metric="pair DATA frames/s at 1400 B",
            value=1 / per_frame,
            unit="frames/s",
            baseline_metric="codec encode+decode frames/s",
            baseline_value=1 / codec_per_frame,
        )
    )
    payload = _FRAME_64K - 8
    bulk = _best(rounds, lambda: _through_pair(payload, bulk_total, _FRAME_64K)[0])
    codec_bulk = _best(rounds, lambda: _codec_only(payload, bulk_total))
    report.add(
        BenchResult(
            metric="pair bulk MB/s, 64 KiB frames",
            value=bulk_total / bulk / 1e6,
            unit="MB/s",
            baseline_metric="codec encode+decode MB/s",
            baseline_value=bulk_total / codec_bulk / 1e6,
        )
    )
    report.notes["cost ratio 1400 B"] = f"{per_frame / codec_per_frame:.2f}x codec-only"
    report.notes["cost ratio bulk"] = f"{bulk / codec_bulk:.2f}x codec-only"
    return report
