"""A minimal HTTP/1.1 client connection for the HTTPS fallback carrier.

Own code rather than a client library so the dialer controls every TLS connection: it
is opened with the fabric's (or the proxy-verifying) context, and its server certificate
is checked *before* the first byte of a request — carrying the secret session id — is
sent.  One request at a time per connection, keep-alive, ``Content-Length`` or chunked
response bodies (what nginx and aiohttp send).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
MAX_BODY = 8 * 1024 * 1024
AGENT = "accessfabric"


class HttpError(ConnectionError):
    """The HTTP exchange failed (malformed answer, connection closed mid-response)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


class HttpConnection:
    """One keep-alive HTTP/1.1 connection (TLS or not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader = reader
        self._writer = writer
        self._host = host
        self.usable = True

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None) -> HttpConnection:
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
            limit=MAX_HEAD,
        )
        return cls(reader, writer, host)

    def ssl_object(self) -> ssl.SSLObject | None:
        found: ssl.SSLObject | None = self._writer.get_extra_info("ssl_object")
        return found

    async def request(self, method: str, target: str, body: bytes = b"") -> HttpResponse:
        """Send one request, read its whole response; ``HttpError`` / ``OSError`` on failure."""
        if not self.usable:
            raise HttpError("connection is not reusable")
        self.usable = False  # until the whole response was read
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self._host}\r\nUser-Agent: {AGENT}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n\r\n"
        ).encode("ascii")
        self._writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._writer.write(body)
        await self._writer.drain()
        status, headers, keep_alive = await self._read_head()
        payload, framed = await self._read_body(method, status, headers)
        self.usable = keep_alive and framed
        return HttpResponse(status, headers, payload)

    async def _read_head(self) -> tuple[int, dict[str, str], bool]:
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            raise HttpError("connection closed before the response") from error
        except asyncio.LimitOverrunError as error:
            raise HttpError("response head too large") from error
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"malformed status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        return int(parts[1]), headers, keep_alive

    async def _read_body(
        self, method: str, status: int, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        """(body, whether it was framed so the connection can be reused)."""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b"", True
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return await self._read_chunked(), True
            if "content-length" in headers:
                length = int(headers["content-length"])
                if not 0 <= length <= MAX_BODY:
                    raise HttpError(f"response body of {length} bytes")
                return await self._reader.readexactly(length), True
        except asyncio.IncompleteReadError as error:
            raise HttpError("connection closed mid-body") from error
        except asyncio.LimitOverrunError as error:
            raise HttpError("chunk header too long") from error
        except ValueError as error:
            raise HttpError(f"bad response framing: {error}") from error
        return await self._reader.read(MAX_BODY), False

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise HttpError("response body too large")
            body += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    def close(self) -> None:
        self.usable = False
        self._writer.close()

    def abort(self) -> None:
        self.usable = False
        transport = self._writer.transport
        transport.abort()
