"""HTTPS fallback carrier, dialer side: one upload loop, one long-poll download loop.

Two keep-alive HTTP/1.1 connections (``up`` and ``down``), reopened when a proxy drops
them; a failed request is retried with the same sequence number, so nothing is lost or
doubled.  When TLS ends at the peer node (``bind_tls``), the carrier's channel binding
is the ``tls-exporter`` (RFC 9266) of the connection that carried ``open``, and every later
connection must present the same certificate key — checked right after its handshake,
before the session id is sent on it.  Protocol: ``carriers/https_fallback.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import Callable

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.errors import CertificatePinMismatch
from accessfabric.carriers.https_client import HttpConnection, HttpError, HttpResponse
from accessfabric.carriers.https_fallback import KIND, MAX_BATCH, POLL_WAIT, WRITE_LIMIT
from accessfabric.identity.tls import PeerTlsInfo, peer_identity_from_ssl_object
from accessfabric.timeouts import wait_within

log = logging.getLogger(__name__)

RETRIES = 4
"""Attempts per request before the carrier is declared lost."""
RETRY_DELAY = 0.2
REQUEST_TIMEOUT = 30.0
TRANSIENT_STATUSES = frozenset({502, 503, 504})
"""Proxy answers worth a retry (the node restarted behind it, a pool was full)."""
CLOSE_TIMEOUT = 2.0

ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]
_background: set[asyncio.Task[None]] = set()


class FallbackRefused(ConnectionError):
    """The HTTP peer refused the carrier (a non-fabric server, a wrong path, 4xx/5xx)."""


class FallbackClientCarrier:
    """The dialer's end; :meth:`open` runs ``POST open`` and starts both loops."""

    kind = KIND

    def __init__(
        self,
        factory: ListenerFactory,
        *,
        host: str,
        port: int,
        path: str,
        context: ssl.SSLContext,
        bind_tls: bool,
        certificate_fingerprint: bytes | None = None,
    ) -> None:
        self._factory = factory
        self._host, self._port = host, port
        self._base = path.rstrip("/")
        self._context = context
        self._bind_tls = bind_tls
        self._fingerprint = certificate_fingerprint
        self._server_key: bytes | None = None
        self._loop = asyncio.get_running_loop()
        self._connections: dict[str, HttpConnection | None] = {"up": None, "down": None}
        self._session_id = ""
        self._listener: CarrierListener | None = None
        self._out = bytearray()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []

    # set-up
    async def open(self) -> None:
        """Connect, check the certificate, open the carrier; the listener exists after it."""
        connection = await self._connect()
        self._connections["up"] = connection
        tls = self._check(connection, first=True)
        response = await connection.request("POST", f"{self._base}/open")
        session_id = response.headers.get("x-fabric-session", "")
        if response.status != 200 or len(session_id) != 64:
            connection.abort()
            raise FallbackRefused(f"https fallback open refused: HTTP {response.status}")
        self._session_id = session_id
        info = CarrierInfo(
            kind=KIND,
            dialer=True,
            peer_address=f"{self._host}:{self._port}",
            channel_binding=tls.channel_binding if tls else b"",
            peer_certificate_key=tls.public_key_bytes if tls else None,
        )
        self._listener = self._factory(info, self, tls)
        self._tasks = [
            self._loop.create_task(self._up_loop()),
            self._loop.create_task(self._down_loop()),
        ]

    async def _connect(self) -> HttpConnection:
        return await HttpConnection.open(self._host, self._port, self._context)

    def _check(self, connection: HttpConnection, *, first: bool) -> PeerTlsInfo | None:
        """The peer's TLS facts (bound mode); raises before any request is sent."""
        if not self._bind_tls:
            return None
        ssl_object = connection.ssl_object()
        if ssl_object is None:
            connection.abort()
            raise ValueError("an https fallback carrier bound to TLS needs TLS")
        try:
            tls = peer_identity_from_ssl_object(ssl_object)
            if tls.public_key_bytes is None:
                raise CertificatePinMismatch("https fallback peer presented no certificate")
            fingerprint = self._fingerprint if first else None
            if fingerprint is not None and (
                tls.fingerprint is None or not hmac.compare_digest(tls.fingerprint, fingerprint)
            ):
                raise CertificatePinMismatch(
                    "https fallback peer certificate is not the pinned fingerprint"
                )
            if first:
                self._server_key = tls.public_key_bytes
            elif self._server_key is None or not hmac.compare_digest(
                tls.public_key_bytes, self._server_key
            ):
                raise CertificatePinMismatch(
                    "https fallback: a later connection presented another certificate key"
                )
        except BaseException:
            connection.abort()
            raise
        return tls

    # ByteTransport side
    def write(self, data: bytes) -> None:
        if self._closing or self._closed or not data:
            return
        self._out += data
        self._wake.set()

    def write_capacity(self) -> int:
        if self._closing or self._closed:
            return 0
        return max(0, WRITE_LIMIT - len(self._out) - self._in_flight)

    def close(self) -> None:
        """Send what is queued, then ``close``; the listener hears ``connection_lost``."""
        if not self._closing and not self._closed:
            self._closing = True
            self._wake.set()
            if not self._tasks:
                self._lost(None)

    def abort(self) -> None:
        if self._closed:
            return
        if self._session_id:
            task = self._loop.create_task(self._send_close())
            _background.add(task)
            task.add_done_callback(_background.discard)
        self._lost(None)

    # loops
    async def _up_loop(self) -> None:
        seq = 0
        try:
            while True:
                while not self._out and not self._closing:
                    self._wake.clear()
                    await self._wake.wait()
                if not self._out:
                    break
                batch = bytes(self._out[:MAX_BATCH])
                del self._out[:MAX_BATCH]
                self._in_flight = len(batch)
                target = f"{self._base}/s/{self._session_id}/up?seq={seq}"
                response = await self._exchange("up", "POST", target, batch, REQUEST_TIMEOUT)
                if response.status != 204:
                    raise FallbackRefused(f"upload refused: HTTP {response.status}")
                seq += 1
                self._in_flight = 0
                if self._listener is not None:
                    self._listener.writable()
            await self._exchange(
                "up", "POST", f"{self._base}/s/{self._session_id}/close", b"", CLOSE_TIMEOUT
            )
            self._lost(None)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._lost(error)

    async def _down_loop(self) -> None:
        seq = 0
        try:
            while True:
                target = f"{self._base}/s/{self._session_id}/down?seq={seq}"
                response = await self._exchange("down", "GET", target, b"", POLL_WAIT + 15.0)
                if response.status == 200:
                    seq += 1
                    if response.body and self._listener is not None:
                        self._listener.data_received(response.body)
                elif response.status == 410:
                    self._lost(None)
                    return
                elif response.status != 204:
                    raise FallbackRefused(f"download refused: HTTP {response.status}")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._lost(error)

    async def _exchange(
        self, slot: str, method: str, target: str, body: bytes, timeout: float
    ) -> HttpResponse:
        """One request on ``slot``'s connection, retried on a fresh connection when it fails."""
        error: BaseException | None = None
        for attempt in range(RETRIES):
            if attempt:
                await asyncio.sleep(RETRY_DELAY * attempt)
            connection = self._connections[slot]
            try:
                if connection is None or not connection.usable:
                    if connection is not None:
                        connection.close()
                    connection = self._connections[slot] = None
                    connection = await wait_within(self._connect(), timeout)
                    self._check(connection, first=False)
                    self._connections[slot] = connection
                response = await wait_within(connection.request(method, target, body), timeout)
            except CertificatePinMismatch:
                raise
            except (OSError, HttpError, TimeoutError, ssl.SSLError) as failure:
                error = failure
                if connection is not None:
                    connection.abort()
                self._connections[slot] = None
                continue
            if response.status in TRANSIENT_STATUSES:
                error = FallbackRefused(f"HTTP {response.status} from {self._host}")
                continue
            return response
        raise ConnectionError(f"https fallback {slot} request failed {RETRIES} times: {error}")

    async def _send_close(self) -> None:
        with contextlib.suppress(Exception):
            connection = await asyncio.wait_for(self._connect(), CLOSE_TIMEOUT)
            try:
                self._check(connection, first=False)
                target = f"{self._base}/s/{self._session_id}/close"
                await asyncio.wait_for(connection.request("POST", target), CLOSE_TIMEOUT)
            finally:
                connection.close()

    def _lost(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for slot, connection in self._connections.items():
            if connection is not None:
                connection.abort()
            self._connections[slot] = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            self._loop.call_soon(listener.connection_lost, exc)
