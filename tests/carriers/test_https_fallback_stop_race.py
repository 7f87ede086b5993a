"""An HTTPS fallback carrier lost in the loop step a long poll answers stops polling
(ADR 0067).

With 3.11's ``asyncio.wait_for`` around the request, the download loop lost the cancel
``_lost`` sent it, went on as if the carrier lived and polled again on a new connection
(for ever, while the server held the poll): a loop running after its owner cancelled it.
A plain-HTTP server on loopback plays the fallback server; the carrier is aborted right
after the poll's response is read, before the loop runs again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from accessfabric.carriers.https_client import HttpConnection, HttpResponse
from accessfabric.carriers.https_fallback_client import FallbackClientCarrier

LOOPBACK = "127.0.0.1"
SESSION_ID = "ab" * 32


class PollServer:
    """``/open`` gives a session, the first ``/down`` one byte, every later poll is held."""

    def __init__(self) -> None:
        self.polls = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                line = head.split(b"\r\n", 1)[0].decode()
                length = 0
                for header in head.split(b"\r\n")[1:]:
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if "/open" in line:
                    writer.write(_response(200, f"x-fabric-session: {SESSION_ID}\r\n"))
                elif "/down" in line:
                    self.polls += 1
                    if self.polls > 1:
                        await asyncio.Event().wait()  # held, as a long poll with nothing
                    writer.write(_response(200, "", b"x"))
                else:
                    writer.write(_response(204, ""))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _response(status: int, headers: str, body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status} X\r\n{headers}content-length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Listener:
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        self.received += data

    def writable(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


class AbortedAsThePollAnswers(FallbackClientCarrier):
    """The carrier, aborted (e.g. its session ended) in the step a poll's answer arrives."""

    async def _connect(self) -> HttpConnection:
        connection = await super()._connect()
        carrier = self
        request = connection.request

        async def request_then_aborted(method: str, target: str, body: bytes = b"") -> Any:
            response: HttpResponse = await request(method, target, body)
            if "/down" in target:
                asyncio.get_running_loop().call_soon(carrier.abort)
            return response

        connection.request = request_then_aborted  # type: ignore[method-assign]
        return connection


async def test_a_carrier_lost_as_a_poll_answers_stops_polling() -> None:
    server = PollServer()
    port = await server.start()
    listener = Listener()
    carrier = AbortedAsThePollAnswers(
        lambda info, transport, tls: listener,
        host=LOOPBACK, port=port, path="/fabric-poll",
        context=None,  # type: ignore[arg-type]  # plain HTTP on loopback
        bind_tls=False,
    )  # fmt: skip
    try:
        await carrier.open()
        loops = list(carrier._tasks)
        done, _ = await asyncio.wait(loops, timeout=5.0)
        assert done == set(loops), f"a loop went on after the carrier was lost: {loops}"
        assert all(task.cancelled() for task in loops)
        assert listener.lost and bytes(listener.received) == b"x"
    finally:
        for task in carrier._tasks:
            task.cancel()
        server.close()
