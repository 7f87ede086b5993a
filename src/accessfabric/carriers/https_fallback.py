"""HTTPS fallback carrier, acceptor side: fabric bytes over plain HTTP/1.1 long-poll.

The emergency path for networks where only ordinary HTTPS through a reverse proxy gets
out (``docs/adr/0009-https-fallback.md``).  Every exchange is a complete HTTP request
and a complete response, so a proxy that buffers bodies, drops upgrades or cuts idle
connections still carries it:

* ``POST {path}/open`` starts a carrier and answers its session id (64 hex digits, a
  secret only the dialer learns, inside TLS);
* ``POST {path}/s/{id}/up?seq=N`` carries the dialer's bytes, batch ``N`` (0, 1, ...);
  a repeated batch (a retry whose answer was lost) is acknowledged and dropped;
* ``GET {path}/s/{id}/down?seq=N`` long-polls for the acceptor's batch ``N``: answered
  at once when bytes are queued, else after ``POLL_WAIT`` with 204 (ask again).  Asking
  for ``N`` again re-sends batch ``N``; asking for ``N + 1`` acknowledges it;
* ``POST {path}/s/{id}/close`` ends the carrier; a closed carrier answers 410.

Queues are bounded: :meth:`FallbackServerCarrier.write_capacity` counts what waits for a
poll and the batch not yet acknowledged, so the session keeps the queue, as over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from aiohttp import web

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.identity.tls import PeerTlsInfo, peer_identity_from_ssl_object

log = logging.getLogger(__name__)

KIND = "https_fallback"
MAX_BATCH = 256 * 1024
"""Largest body of one up or down request."""
WRITE_LIMIT = 512 * 1024
"""Bytes one end may hold below the session (queued plus unacknowledged)."""
POLL_WAIT = 20.0
"""Seconds a down poll waits for bytes: under the usual 60 s proxy read timeout."""
IDLE_TIMEOUT = 60.0
"""A carrier with no request for this long is gone (the dialer vanished)."""
SESSION_HEADER = "X-Fabric-Session"
SEQ_HEADER = "X-Fabric-Seq"
NO_STORE = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Server": "accessfabric"}

ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]


def forwarded_client(value: str | None) -> str | None:
    """The last entry of ``X-Forwarded-For``: what the trusted proxy itself saw."""
    if not value:
        return None
    last = value.rsplit(",", 1)[-1].strip()
    return last or None


class FallbackServerCarrier:
    """One dialer's carrier on the acceptor: an outbound queue and sequence numbers."""

    kind = KIND

    def __init__(self, session_id: str, on_gone: Callable[[str], None]) -> None:
        self.session_id = session_id
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self.listener: CarrierListener | None = None
        self._out = bytearray()
        self._next_down = 0
        self._unacked: tuple[int, bytes] | None = None
        self._next_up = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._closed = False
        self._idle: asyncio.TimerHandle | None = None
        self._touch()

    # ByteTransport side
    def write(self, data: bytes) -> None:
        if self._closing or self._closed or not data:
            return
        self._out += data
        self._wakeup.set()

    def write_capacity(self) -> int:
        if self._closing or self._closed:
            return 0
        unacked = len(self._unacked[1]) if self._unacked else 0
        return max(0, WRITE_LIMIT - len(self._out) - unacked)

    def close(self) -> None:
        """Deliver what is queued, then answer 410 (the dialer sees a clean end)."""
        if not self._closing and not self._closed:
            self._closing = True
            self._wakeup.set()
            if not self._out and self._unacked is None:
                self._lost(None)

    def abort(self) -> None:
        self._out.clear()
        self._lost(None)

    # requests
    def receive_up(self, seq: int, body: bytes) -> int:
        """HTTP status for upload batch ``seq``."""
        self._touch()
        if self._closed:
            return 410
        if seq < self._next_up:
            return 204  # a retry of a delivered batch
        if seq > self._next_up:
            return 409
        self._next_up += 1
        if body and self.listener is not None:
            self.listener.data_received(body)
        return 204

    async def poll_down(self, seq: int) -> tuple[int, bytes]:
        """(status, body) for download batch ``seq``, waiting up to ``POLL_WAIT``."""
        self._touch()
        deadline = self._loop.time() + POLL_WAIT
        while True:
            if self._unacked is not None and self._unacked[0] == seq:
                return 200, self._unacked[1]
            if seq != self._next_down:
                return (410, b"") if self._closed else (409, b"")
            if self._unacked is not None:  # the dialer asks for the next: acknowledged
                self._unacked = None
                self._loop.call_soon(self._writable)
            if self._out:
                batch = bytes(self._out[:MAX_BATCH])
                del self._out[:MAX_BATCH]
                self._unacked = (seq, batch)
                self._next_down += 1
                self._loop.call_soon(self._writable)
                return 200, batch
            if self._closed or self._closing:
                self._lost(None)
                return 410, b""
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return 204, b""
            self._wakeup.clear()
            try:  # asyncio.timeout: on 3.11 wait_for can lose a cancel that lands as it wakes
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                self._touch()
                return 204, b""
            self._touch()

    def remote_close(self) -> None:
        self._lost(None)

    # internals
    def _writable(self) -> None:
        if self.listener is not None and not self._closed:
            self.listener.writable()

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if not self._closed:
            self._idle = self._loop.call_later(IDLE_TIMEOUT, self._expired)

    def _expired(self) -> None:
        self._idle = None
        self._lost(TimeoutError("https fallback dialer sent no request for 60 s"))

    def _lost(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._on_gone(self.session_id)
        if self.listener is not None:
            listener, self.listener = self.listener, None
            self._loop.call_soon(listener.connection_lost, exc)


class FallbackServer:
    """The HTTP side: an aiohttp application serving the long-poll routes under ``path``.

    ``bind_tls`` is true when TLS ends at this node: the carrier's channel binding is the
    ``tls-exporter`` (RFC 9266) of the connection that carried ``open``.  Behind a TLS-terminating
    proxy it is false: empty binding, and ``X-Forwarded-For`` names the client.
    """

    def __init__(self, factory: ListenerFactory, *, path: str, bind_tls: bool) -> None:
        self._factory = factory
        self._bind_tls = bind_tls
        self.carriers: dict[str, FallbackServerCarrier] = {}
        self.opened = 0
        self.app = web.Application(client_max_size=MAX_BATCH + 4096)
        base = path.rstrip("/")
        self.app.router.add_post(f"{base}/open", self._open)
        self.app.router.add_post(base + "/s/{sid}/up", self._up)
        self.app.router.add_get(base + "/s/{sid}/down", self._down)
        self.app.router.add_post(base + "/s/{sid}/close", self._close)

    def abort_all(self) -> None:
        for carrier in list(self.carriers.values()):
            carrier.abort()

    async def _open(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is None:
            raise web.HTTPBadRequest()
        tls: PeerTlsInfo | None = None
        if self._bind_tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None:
                raise web.HTTPForbidden(text="TLS required")
            tls = peer_identity_from_ssl_object(ssl_object)
        peer = transport.get_extra_info("peername")
        session_id = secrets.token_hex(32)
        carrier = FallbackServerCarrier(session_id, self._gone)
        forwarded = (
            None if self._bind_tls else forwarded_client(request.headers.get("X-Forwarded-For"))
        )
        info = CarrierInfo(
            kind=KIND,
            dialer=False,
            peer_address=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            channel_binding=tls.channel_binding if tls else b"",
            peer_certificate_key=tls.public_key_bytes if tls else None,
            forwarded_for=forwarded,
        )
        self.carriers[session_id] = carrier
        self.opened += 1
        carrier.listener = self._factory(info, carrier, tls)
        # anyone can open one: the node logs it at a bounded rate (node/dialing/https_endpoints.py)
        log.debug("https fallback carrier opened from %s", forwarded or info.peer_address)
        return web.Response(
            body=session_id.encode(), headers={SESSION_HEADER: session_id, **NO_STORE}
        )

    def _carrier(self, request: web.Request) -> tuple[FallbackServerCarrier, int]:
        carrier = self.carriers.get(request.match_info["sid"])
        if carrier is None:
            raise web.HTTPGone(headers=NO_STORE)
        try:
            seq = int(request.query.get("seq", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="seq must be an integer") from None
        if seq < 0:
            raise web.HTTPBadRequest(text="seq must be >= 0")
        return carrier, seq

    async def _up(self, request: web.Request) -> web.Response:
        carrier, seq = self._carrier(request)
        body = await request.read()
        return web.Response(status=carrier.receive_up(seq, body), headers=NO_STORE)

    async def _down(self, request: web.Request) -> web.Response:
        carrier, seq = self._carrier(request)
        status, body = await carrier.poll_down(seq)
        headers = {SEQ_HEADER: str(seq), **NO_STORE}
        if status == 200:
            return web.Response(body=body, headers=headers, content_type="application/octet-stream")
        return web.Response(status=status, headers=headers)

    async def _close(self, request: web.Request) -> web.Response:
        carrier = self.carriers.get(request.match_info["sid"])
        if carrier is not None:
            carrier.remote_close()
        return web.Response(status=204, headers=NO_STORE)

    def _gone(self, session_id: str) -> None:
        self.carriers.pop(session_id, None)
