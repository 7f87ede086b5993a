"""One bidirectional QUIC stream as the :class:`ByteTransport` of one fabric session.

``write_capacity`` is the room left under ``write_high_water`` in the stream's QUIC
send queue (bytes not yet sent for the first time): that queue only drains as QUIC
flow control and the congestion window allow, so the session holds the backlog.
The connection wakes the session after each transmit that brought the queue below half.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from qh3.quic.connection import QuicConnection

from accessfabric.carriers.base import CarrierListener, CarrierStats
from accessfabric.carriers.errors import CarrierCapacityLimited
from accessfabric.carriers.quic_adapter import recovery_stats
from accessfabric.carriers.quic_config import CANCEL_CODE, STREAM_LIMIT_CODE, QuicCarrierConfig


class QuicStreamHost(Protocol):
    """What a stream carrier uses of its QUIC connection
    (:class:`~accessfabric.carriers.quic_protocol.QuicCarrierProtocol`)."""

    config: QuicCarrierConfig
    endpoint: str
    blocked: set[QuicStreamCarrier]
    """Streams waiting for their send queue to drain to half (woken by ``writable``)."""

    @property
    def quic(self) -> QuicConnection: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def stats_probe(self) -> QuicStatsProbe: ...

    def stream_op(self, operation: Callable[..., None], *args: Any) -> None: ...

    def deliver_soon(self, carrier: QuicStreamCarrier) -> None: ...

    def forget_if_done(self, carrier: QuicStreamCarrier) -> None: ...

    async def migrate(self) -> bool: ...


class QuicStreamCarrier:
    """One bidirectional QUIC stream as a :class:`ByteTransport` for one fabric session."""

    kind = "quic"

    def __init__(self, connection: QuicStreamHost, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.listener: CarrierListener | None = None
        self.loss: BaseException | None = None
        """Why the carrier ended, when it was not a clean close."""
        self._send_closed = False
        self._recv_closed = False
        self._lost = False
        self._pending: list[bytes] = []
        self._end_pending = False

    # ByteTransport side
    def write(self, data: bytes) -> None:
        if not self._send_closed:
            self._connection.stream_op(self._connection.quic.send_stream_data, self.stream_id, data)

    def write_capacity(self) -> int:
        if self._send_closed:
            return 0
        config = self._connection.config
        queued = self._connection.quic.get_send_buffer_size(self.stream_id)
        if queued > config.write_high_water // 2:
            # Blocked until the queue drains to half: then the session writes a large
            # piece at once instead of a sliver per ACK.
            self._connection.blocked.add(self)
            return 0
        return config.write_high_water - queued

    def close(self) -> None:
        if not self._send_closed:
            self._send_closed = True
            quic = self._connection.quic
            self._connection.stream_op(quic.send_stream_data, self.stream_id, b"", True)
        self._lose(None, soon=True)
        self._connection.forget_if_done(self)

    def abort(self) -> None:
        connection = self._connection
        if not self._send_closed:
            self._send_closed = True
            connection.stream_op(connection.quic.reset_stream, self.stream_id, CANCEL_CODE)
        if not self._recv_closed:
            self._recv_closed = True
            connection.stream_op(connection.quic.stop_stream, self.stream_id, CANCEL_CODE)
        self._lose(None, soon=True)
        self._connection.forget_if_done(self)

    # connection side
    def received(self, data: bytes, end_stream: bool) -> None:
        """Queue what arrived; :meth:`deliver` hands it over once per receive burst."""
        if self._recv_closed or self._end_pending:
            return
        if data:
            self._pending.append(data)
        self._end_pending = end_stream
        self._connection.deliver_soon(self)

    def deliver(self) -> None:
        pending = self._pending
        if pending and not self._recv_closed:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            if self.listener is not None:
                self.listener.data_received(data)
        pending.clear()
        if self._end_pending and not self._recv_closed:
            self._recv_closed = True
            self._lose(None, soon=False)
            self._connection.forget_if_done(self)

    def peer_refused(self, code: int, *, stop_sending: bool) -> None:
        """The peer reset its side (RESET_STREAM) or asked us to stop (STOP_SENDING)."""
        self.deliver()
        if self.done:
            return
        error: BaseException
        if code == STREAM_LIMIT_CODE:
            error = CarrierCapacityLimited(self._connection.endpoint, None, remote=True)
        else:
            error = ConnectionResetError(f"QUIC stream {self.stream_id} reset by peer: {code}")
        connection = self._connection
        if not self._send_closed:
            connection.stream_op(connection.quic.reset_stream, self.stream_id, code)
        if stop_sending and not self._recv_closed:
            connection.stream_op(connection.quic.stop_stream, self.stream_id, code)
        self._send_closed = self._recv_closed = True
        self._lose(error, soon=False)
        self._connection.forget_if_done(self)

    def connection_gone(self, error: BaseException | None) -> None:
        self.deliver()
        self._send_closed = self._recv_closed = True
        self._lose(error, soon=False)

    def _lose(self, error: BaseException | None, *, soon: bool) -> None:
        if self._lost:
            return
        self._lost = True
        if error is not None and self.loss is None:
            self.loss = error
        self._connection.blocked.discard(self)
        listener, self.listener = self.listener, None
        if listener is None:
            return
        if soon:
            self._connection.loop.call_soon(listener.connection_lost, error)
        else:
            listener.connection_lost(error)

    @property
    def done(self) -> bool:
        return self._send_closed and self._recv_closed

    async def migrate(self) -> bool:
        """Move the QUIC connection to the machine's current path (see
        :meth:`QuicCarrierProtocol.migrate`); False when this side cannot migrate."""
        return await self._connection.migrate()

    @property
    def stats_probe(self) -> QuicStatsProbe:
        """The connection's probe: every stream (session) of it shares one."""
        return self._connection.stats_probe


class QuicStatsProbe:
    """Samples one QUIC connection's recovery figures; the last sample once it is gone."""

    def __init__(self, connection: QuicStreamHost) -> None:
        self._connection = connection
        self.last: CarrierStats | None = None

    def sample(self) -> CarrierStats | None:
        stats = recovery_stats(self._connection.quic)
        if stats is not None:
            self.last = stats
        return self.last
