"""CPU per GiB of the fabric bulk path's session work alone: no sockets, no TLS (issue 18).

``python -m accessfabric.bench.carrier_session_cpu [--mib 512] [--rounds 3]`` drives two
paired sessions of the default :class:`SessionConfig` (pacing and the pressure cap on)
the way ``bench carrier``'s fabric transfer drives them: the sender queues 256 KiB
pieces while its send buffer has room and asks ``data_to_send`` for 128 KiB (the TCP
carrier's write high-water mark); the receiver is handed those bytes through one reused
256 KiB buffer (the carrier's receive buffer), consumes each DATA payload and answers
with its ACKs and credit, which the sender reads.  Each side's ``process_time`` is summed
over its own calls only, so the figure is the session's and the codec's interpreter work
per GiB (frame cutting, encode, decode, credit, ACKs, pacer and event objects, the copies
they make) without the carrier, the event loop or the kernel; it is the least of the
rounds.  A CPU-time figure of one process's own calls: it moves far less with the
machine's load than ``carrier_cpu``'s, which is what A/B runs of two trees
(``PYTHONPATH=<tree>/src``) need to resolve a few per cent.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time

from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.node.host.allocator import keep_large_blocks
from accessfabric.session import DataReceived, Session, SessionConfig
from accessfabric.wire import TrafficClass

PIECE = 256 * 1024
"""The application's writes (``bench carrier``'s ``WRITE``)."""
WRITE_BUDGET = 128 * 1024
"""What the sender's carrier takes per write (``carriers.tcp.WRITE_HIGH_WATER``)."""
RECEIVE_BUFFER = 256 * 1024
"""The receiver's carrier buffer (``carriers.tcp.RECEIVE_BUFFER``)."""
GiB = 1 << 30


def _pair(now: float) -> tuple[Session, Session]:
    config = SessionConfig()
    a = Session(
        dialer=True,
        authenticator=Ed25519Authenticator(NodeKey.generate()),
        random_bytes=secrets.token_bytes,
        config=config,
        now=now,
    )
    b = Session(
        dialer=False,
        authenticator=Ed25519Authenticator(NodeKey.generate()),
        random_bytes=secrets.token_bytes,
        config=config,
        now=now,
    )
    for _ in range(4):
        b.receive_data(a.data_to_send(now=now), now)
        a.receive_data(b.data_to_send(now=now), now)
    return a, b


def transfer(total: int) -> tuple[float, float]:
    """Move ``total`` bytes; the sender's and the receiver's CPU seconds in the sessions."""
    clock = time.monotonic
    cpu = time.process_time
    a, b = _pair(clock())
    stream_id = a.open_stream("bench", TrafficClass.BULK)
    piece = os.urandom(PIECE)
    buffer = memoryview(bytearray(RECEIVE_BUFFER))
    wire = bytearray()
    queued = received = 0
    sender = receiver = 0.0
    while received < total:
        started = cpu()
        while queued < total and a.send_buffer_available(stream_id) >= PIECE:
            a.send_data(stream_id, piece)
            queued += PIECE
        out = a.data_to_send(WRITE_BUDGET, now=clock())
        sender += cpu() - started
        if not out and queued >= total and not wire:
            raise RuntimeError(f"stalled at {received} of {total} bytes")
        wire += out
        while wire:
            size = min(len(wire), RECEIVE_BUFFER)
            buffer[:size] = wire[:size]
            del wire[:size]
            started = cpu()
            for event in b.receive_data(buffer[:size], clock()):
                if type(event) is DataReceived:
                    received += len(event.data)
                    b.acknowledge_received(event.stream_id, len(event.data))
            back = b.data_to_send(now=clock())
            receiver += cpu() - started
            if back:
                started = cpu()
                a.receive_data(back, clock())
                sender += cpu() - started
    return sender, receiver


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.bench.carrier_session_cpu")
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    keep_large_blocks()  # as every node and bench process (ADR 0041)
    total = args.mib << 20
    best_sender = best_receiver = float("inf")
    for _ in range(args.rounds):
        sender, receiver = transfer(total)
        best_sender = min(best_sender, sender * GiB / total)
        best_receiver = min(best_receiver, receiver * GiB / total)
    print(f"session CPU s/GiB sender {best_sender:.3f} receiver {best_receiver:.3f}")


if __name__ == "__main__":
    main()
