"""The TCP carrier moves a bounded amount per event-loop turn; urgent frames overtake bulk.

On loopback (and with uvloop's TLS transport, whose ``get_write_buffer_size`` does not
count its socket's buffer) every write is taken at once, so the transport's high-water
mark never bound a flush: one turn handed the peer's kernel megabytes of bulk (measured
in the 5-node demo: flushes of up to 2.4 MB, reads of up to 1.9 MB per turn), and an
interactive frame written after that turn queued behind all of it.  The carrier now takes
at most ``TURN_WRITE_BUDGET`` a turn (the rest waits in the session, where priority
applies), still takes control and urgent frames once the budget is spent, and pauses
reading after ``TURN_READ_BUDGET`` until the next turn (ADR 0047).

The transport here behaves as uvloop's TLS transport on loopback does: its write buffer
is always empty.
"""

from __future__ import annotations

import asyncio
from typing import Any

from accessfabric.carriers.base import ByteTransport, CarrierInfo
from accessfabric.carriers.tcp import TURN_READ_BUDGET, TURN_WRITE_BUDGET, URGENT_ROOM, TcpCarrier
from accessfabric.identity.tls import PeerTlsInfo
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.session.pair import make_pair

BULK_BYTES = 4 * 1024 * 1024


class LoopbackTransport(asyncio.Transport):
    """Takes every write at once (an empty write buffer), records it; reading pausable."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = True
        self.pauses = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def sender() -> tuple[TcpCarrier, LoopbackTransport, SessionConnection, Any]:
    # The receiver grants windows larger than the bulk, and the sender does not pace: only
    # the carrier's budget limits what one turn writes.
    window = 2 * BULK_BYTES
    wide = SessionConfig(initial_stream_window=window, initial_session_window=window)
    pair = make_pair(SessionConfig(pacing_target_delay=None), wide)
    made: list[SessionConnection] = []

    def factory(info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None) -> Any:
        connection = SessionConnection(pair.a, info)
        connection.attach(transport)
        made.append(connection)
        return connection

    carrier = TcpCarrier(factory, dialer=True)
    transport = LoopbackTransport()
    carrier.connection_made(transport)
    return carrier, transport, made[0], pair


async def test_one_turn_writes_one_budget_of_bulk_and_an_interactive_frame_overtakes_the_rest() -> (
    None
):
    _carrier, transport, connection, pair = sender()
    bulk_id = pair.a.open_stream("web", TrafficClass.BULK)
    bulk = connection.wrap_stream(bulk_id, "web", TrafficClass.BULK)
    echo_id = pair.a.open_stream("term", TrafficClass.INTERACTIVE)
    echo = connection.wrap_stream(echo_id, "term", TrafficClass.INTERACTIVE)
    bulk.write(bytes(BULK_BYTES))
    await asyncio.sleep(0)  # one turn: the scheduled flush ran

    first_turn = sum(map(len, transport.written))
    assert 0 < first_turn <= TURN_WRITE_BUDGET, first_turn
    echo.write(b"ping" * 16)  # the turn's budget is spent: it still goes out now
    assert first_turn < sum(map(len, transport.written)) <= first_turn + URGENT_ROOM

    # Later turns write the rest of the bulk, one budget each.
    turns = [first_turn]
    while True:
        before = sum(map(len, transport.written))
        await asyncio.sleep(0)
        wrote = sum(map(len, transport.written)) - before
        if not wrote:
            break
        turns.append(wrote)
    assert max(turns) <= TURN_WRITE_BUDGET + URGENT_ROOM, turns
    assert len(turns) >= BULK_BYTES // TURN_WRITE_BUDGET

    # What the peer reads: the echo after at most one turn's bulk, not after 4 MiB.
    bulk_before_echo = 0
    echo_seen = False
    for chunk in transport.written:
        for event in pair.b.receive_data(chunk, 0.0):
            if isinstance(event, ev.DataReceived) and event.stream_id == echo_id:
                echo_seen = True
            elif isinstance(event, ev.DataReceived) and not echo_seen:
                bulk_before_echo += len(event.data)
    assert echo_seen
    assert bulk_before_echo <= TURN_WRITE_BUDGET + URGENT_ROOM, bulk_before_echo


class Collector:
    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        self.received += len(data)

    def writable(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


async def test_reading_pauses_after_one_turns_budget_and_resumes_the_next_turn() -> None:
    collector = Collector()
    carrier = TcpCarrier(lambda info, transport, tls: collector, dialer=False)
    transport = LoopbackTransport()
    carrier.connection_made(transport)
    chunk = 64 * 1024
    view = carrier.get_buffer(chunk)
    for _ in range(TURN_READ_BUDGET // chunk - 1):
        view[:chunk] = bytes(chunk)
        carrier.buffer_updated(chunk)
    assert transport.reading, "under the budget"
    carrier.buffer_updated(chunk)
    assert not transport.reading, "one turn's budget read: the loop polls before more"
    await until(lambda: transport.reading)
    assert transport.pauses == 1
    # The next turn has a budget of its own; a turn under the budget does not pause.
    carrier.buffer_updated(chunk)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    carrier.buffer_updated(chunk)
    assert transport.reading and transport.pauses == 1
    assert collector.received == TURN_READ_BUDGET + 2 * chunk
