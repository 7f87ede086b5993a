"""The in-memory part of ``accessfabric demo``: resume from the last ACK after a cut.

Two real fabric sessions paired in memory (no sockets): a bulk download and an
interactive stream share one session, the carrier is cut mid-transfer and the
download resumes on a new session from its last ACK, with the sha256 of what
arrived checked against what was sent.  The demo labels it as in-memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import TrafficClass


class _Link:
    """Two sessions and the bytes between them; ``cut()`` loses what is in flight."""

    def __init__(self, laptop: NodeKey, home: NodeKey) -> None:
        config = SessionConfig(keepalive_interval=None)
        binding = os.urandom(32)
        self.laptop = Session(
            dialer=True,
            authenticator=Ed25519Authenticator(laptop, expected_peer_id=home.node_id),
            config=config,
            channel_binding=binding,
        )
        self.home = Session(
            dialer=False, authenticator=Ed25519Authenticator(home), config=config,
            channel_binding=binding,
        )  # fmt: skip
        self.home_events: list[ev.Event] = []
        self.laptop_events: list[ev.Event] = []

    def step(self, max_bytes: int = 256 * 1024) -> bool:
        now = time.monotonic()
        to_home = self.laptop.data_to_send(max_bytes, now)
        to_laptop = self.home.data_to_send(max_bytes, now)
        if to_home:
            self.home_events += self.home.receive_data(to_home, now)
        if to_laptop:
            self.laptop_events += self.laptop.receive_data(to_laptop, now)
        return bool(to_home or to_laptop)

    def settle(self) -> None:
        while self.step():
            pass


@dataclass
class MemoryResult:
    ok: bool
    delivered: int
    size: int
    recovery: float
    resumed_from: int


def run_memory_resume(size_mib: int, out: Callable[[str], None] = print) -> MemoryResult:
    size = size_mib << 20
    laptop, home = NodeKey.generate(), NodeKey.generate()

    link = _Link(laptop, home)
    link.settle()
    ready = next(e for e in link.laptop_events if isinstance(e, ev.SessionReady))
    out(f"  handshake done, home proved it is {ready.peer_node_id[:16]}…")

    payload = os.urandom(size)
    download = link.home  # home serves the file; the laptop opens the streams
    bulk = link.laptop.open_stream("files", TrafficClass.BULK)
    rdp = link.laptop.open_stream("rdp", TrafficClass.INTERACTIVE)
    link.settle()
    opened = {e.service: e.stream_id for e in link.home_events if isinstance(e, ev.StreamOpened)}
    link.home_events.clear()
    chunks = [payload[i : i + (1 << 20)] for i in range(0, size, 1 << 20)]
    received = bytearray()
    latencies: list[float] = []

    def serve(session: Session, stream_id: int) -> None:
        while chunks and session.send_buffer_available(stream_id) >= len(chunks[0]):
            piece = chunks.pop(0)
            session.send_data(stream_id, piece, end_stream=not chunks)

    def consume(events: list[ev.Event], session: Session, bulk_id: int) -> None:
        for event in events:
            if isinstance(event, ev.DataReceived):
                session.acknowledge_received(event.stream_id, len(event.data))
                if event.stream_id == bulk_id:
                    received.extend(event.data)
                else:
                    latencies.append(time.monotonic() - float(bytes(event.data).decode()))
        events.clear()

    out(f"  bulk download of {size_mib} MiB and an interactive stream share the session")
    started = time.monotonic()
    cut_at = size // 2
    while len(received) < cut_at:
        serve(download, opened["files"])
        link.laptop.send_data(rdp, f"{time.monotonic():.9f}".encode())
        link.step()
        consume(link.laptop_events, link.laptop, bulk)
        consume(link.home_events, link.home, -1)
    out(f"  {len(received) >> 20} MiB arrived; interactive messages: {len(latencies)}")

    out("  carrier cut mid-transfer: bytes in flight are lost.")
    snap_laptop = link.laptop.export_stream(bulk)
    snap_home = link.home.export_stream(opened["files"])
    out(f"  laptop received {snap_laptop.recv_offset:,} bytes; home saw ACKs up to "
          f"{snap_home.send_acked:,}")  # fmt: skip
    cut = time.monotonic()
    link = _Link(laptop, home)
    link.settle()
    resumed = link.laptop.resume_stream(snap_laptop)
    link.settle()
    reopened = next(e for e in link.home_events if isinstance(e, ev.StreamOpened))
    link.home_events.clear()
    link.home.adopt_stream(reopened.stream_id, snap_home, reopened.start_offset)
    recovery = time.monotonic() - cut
    out(f"  new session, stream resumed from byte {reopened.start_offset:,} "
          f"in {recovery * 1000:.1f} ms")  # fmt: skip
    while len(received) < size:
        serve(link.home, reopened.stream_id)
        if not link.step() and not chunks:
            break
        consume(link.laptop_events, link.laptop, resumed)
    elapsed = time.monotonic() - started

    ok = hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    out(f"  {len(received):,} bytes in {elapsed:.1f} s, sha256 {'verified' if ok else 'MISMATCH'}")
    return MemoryResult(ok, len(received), size, recovery, reopened.start_offset)
