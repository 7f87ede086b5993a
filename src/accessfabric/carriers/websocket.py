"""WebSocket (wss) carrier: fabric bytes as binary messages, and nothing else.

Every chunk the session hands to :meth:`WebSocketCarrier.write` goes out as one binary
message; the payload of every binary (or continuation) frame received is fed to the
listener as it is, so message boundaries mean nothing and there is no framing of our
own.  The WebSocket protocol is ``websockets``' sans-I/O ``ClientProtocol`` /
``ServerProtocol``; this module is the asyncio protocol around it, the same shape as
``carriers/tcp.py``: bytes in, events out, writes straight into the transport, whose
buffer is kept small so the session holds the queue, and the same loss-recovery timers
(``rto_min``, ``carriers/tcp_timers.py``).  No compression (payloads are
binary and will be sealed), no websocket pings (the session has its own PING).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import cast
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp import WRITE_HIGH_WATER, tune_socket
from accessfabric.carriers.tcp_info import TcpInfoProbe
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.identity.tls import PeerTlsInfo, peer_identity_from_ssl_object

MAX_MESSAGE = 8 * 1024 * 1024
"""Largest message accepted; the session writes at most ``WRITE_HIGH_WATER`` at once."""
FRAGMENT_SIZE = 16 * 1024
"""Frame size within a message: the receiver hands on each frame as soon as it is complete,
so a large message costs no more latency than one TLS record."""
OPEN_TIMEOUT = 10.0
"""Seconds from TCP connect to a finished HTTP upgrade; then the connection is dropped."""
CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the peer's half of the closing handshake before aborting."""
AGENT = "accessfabric"
CLEAN_CLOSE_CODES = (None, CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)

ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]


def forwarded_client(headers: Headers) -> str | None:
    """The client address a trusted reverse proxy appended to ``X-Forwarded-For``."""
    values = headers.get_all("X-Forwarded-For")
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1].strip()
    return last or None


class WebSocketCarrier(asyncio.Protocol):
    """One WebSocket connection; hands binary payloads to the listener the factory returns.

    The dialer passes ``url`` (``wss://host:port/path``); the acceptor passes ``path``
    and answers any other path with 404.  ``bind_tls`` says whether the TLS connection
    ends at the peer node: then the listener gets its ``tls-exporter`` (RFC 9266) binding
    and the peer certificate, exactly as over TCP.  Behind a TLS-terminating reverse proxy it does
    not, and the carrier reports an empty binding and no certificate; the acceptor then
    also trusts the proxy's ``X-Forwarded-For`` (``docs/adr/0005-websocket-behind-proxies.md``).
    """

    kind = "websocket"

    def __init__(
        self,
        factory: ListenerFactory,
        *,
        dialer: bool,
        url: str = "",
        path: str = "/fabric",
        bind_tls: bool = True,
        rto_min: float | None = DEFAULT_RTO_MIN,
    ) -> None:
        self._factory = factory
        self._rto_min = rto_min
        self._dialer = dialer
        self._path = path
        self._bind_tls = bind_tls
        self._ws: ClientProtocol | ServerProtocol
        if dialer:
            self._ws = ClientProtocol(parse_uri(url), max_size=MAX_MESSAGE)
        else:
            self._ws = ServerProtocol(max_size=MAX_MESSAGE)
        self._transport: asyncio.Transport | None = None
        self._listener: CarrierListener | None = None
        self.stats_probe = TcpInfoProbe(lambda: self._transport)
        self._paused = False
        self._text_refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.up: asyncio.Future[None] = self._loop.create_future()

    # asyncio protocol side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tune_socket(transport.get_extra_info("socket"), self._rto_min)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._arm(OPEN_TIMEOUT)
        if isinstance(self._ws, ClientProtocol):
            request = self._ws.connect()
            request.headers["User-Agent"] = AGENT
            self._ws.send_request(request)
            self._transmit()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame_received(event)
            elif isinstance(event, Request):
                self._request_received(event)
            elif isinstance(event, Response):
                self._response_received(event)
        self._transmit()

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        self._transmit()
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._listener is not None:
            self._listener.writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._ws.receive_eof()
        error: BaseException | None = exc
        if error is None and self._ws.close_code not in CLEAN_CLOSE_CODES:
            error = self._ws.close_exc
        if self._text_refused:
            error = ConnectionError("text message on a fabric websocket")
        if not self.up.done():
            self.up.set_exception(error or ConnectionError("connection closed during set-up"))
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.connection_lost(error)

    # WebSocket events
    def _frame_received(self, frame: Frame) -> None:
        if frame.opcode is Opcode.BINARY or frame.opcode is Opcode.CONT:
            if self._listener is not None and frame.data:
                self._listener.data_received(frame.data)
        elif frame.opcode is Opcode.TEXT and not self._text_refused:
            self._text_refused = True
            self._ws.fail(CloseCode.UNSUPPORTED_DATA, "binary messages only")

    def _request_received(self, request: Request) -> None:
        assert isinstance(self._ws, ServerProtocol)
        if urlsplit(request.path).path != self._path:
            response = self._ws.reject(HTTPStatus.NOT_FOUND, "not found\n")
        else:
            response = self._ws.accept(request)
        response.headers["Server"] = AGENT
        self._ws.send_response(response)
        if self._ws.state is State.OPEN:
            trusted = None if self._bind_tls else forwarded_client(request.headers)
            self._opened(forwarded_for=trusted)

    def _response_received(self, response: Response) -> None:
        if self._ws.state is State.OPEN:
            self._opened(forwarded_for=None)
        elif not self.up.done():
            error = self._ws.handshake_exc or ConnectionError(f"HTTP {response.status_code}")
            self.up.set_exception(error)

    def _opened(self, *, forwarded_for: str | None) -> None:
        """The upgrade is done: describe the connection and build the listener."""
        self._disarm()
        transport = self._transport
        assert transport is not None
        try:
            tls: PeerTlsInfo | None = None
            if self._bind_tls:
                ssl_object = transport.get_extra_info("ssl_object")
                if ssl_object is None:
                    raise ValueError("a websocket carrier bound to TLS needs TLS")
                tls = peer_identity_from_ssl_object(ssl_object)
        except Exception as error:
            if not self.up.done():
                self.up.set_exception(error)
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        info = CarrierInfo(
            kind=self.kind,
            dialer=self._dialer,
            peer_address=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            channel_binding=tls.channel_binding if tls else b"",
            peer_certificate_key=tls.public_key_bytes if tls else None,
            forwarded_for=forwarded_for,
        )
        self._listener = self._factory(info, self, tls)
        if not self.up.done():
            self.up.set_result(None)

    # Output and the one timer
    def _transmit(self) -> None:
        transport = self._transport
        if transport is None:
            return
        writes = self._ws.data_to_send()
        if writes and writes[-1] == SEND_EOF:  # end of stream: TLS cannot half-close, so close
            transport.writelines(writes[:-1])
            transport.close()
        elif writes:
            transport.writelines(writes)
        if self._ws.close_expected() and self._timer is None:
            self._arm(CLOSE_TIMEOUT)

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self.up.done():
            self.up.set_exception(TimeoutError("websocket opening handshake timed out"))
        self.abort()

    # ByteTransport side
    def write(self, data: bytes) -> None:
        """Send ``data`` as one binary message, in frames of at most ``FRAGMENT_SIZE``."""
        ws = self._ws
        if ws.state is not State.OPEN or not data:
            return
        size = len(data)
        if size <= FRAGMENT_SIZE:
            ws.send_binary(data)
        else:
            view = memoryview(data)
            ws.send_binary(view[:FRAGMENT_SIZE], fin=False)
            for offset in range(FRAGMENT_SIZE, size, FRAGMENT_SIZE):
                end = offset + FRAGMENT_SIZE
                ws.send_continuation(view[offset:end], fin=end >= size)
        self._transmit()

    def write_capacity(self) -> int:
        transport = self._transport
        if transport is None or self._paused or transport.is_closing():
            return 0
        if self._ws.state is not State.OPEN:
            return 0
        return max(0, WRITE_HIGH_WATER - transport.get_write_buffer_size())

    def close(self) -> None:
        """Start the closing handshake (after what is already written); drop on timeout."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(CloseCode.NORMAL_CLOSURE)
            self._transmit()
        elif self._transport is not None and self._ws.state is State.CONNECTING:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
