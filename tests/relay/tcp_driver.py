"""A TCP echo server, or a TCP client driven over stdin, to run inside a namespace.

``python -m tests.relay.tcp_driver serve HOST:PORT`` echoes every byte back.

``python -m tests.relay.tcp_driver client HOST:PORT`` reads one JSON command per line on
stdin and answers each with one JSON line on stdout (``wall`` is ``time.time()``):

* ``{"op": "open", "id": ID}``: connect, send a probe, wait for its echo;
  ``{"id", "ok", "wall", "seconds"}``, on failure with ``error`` (``reset``: the
  other end sent RST; ``eof``: it closed; ``timeout``) and the connection dropped;
* ``{"op": "ping", "id": ID, "interval": S}``: ping over connection ID in the background
  (a 16-byte message, its echo awaited) every S seconds until ``close``;
* ``{"op": "bulk", "id": ID, "bytes": N, "timeout": S}``: send N random bytes over
  connection ID while reading the echo, within S seconds (30 by default);
  ``{"id", "ok", "sent_sha256", "echo_sha256", "seconds"}``; on failure ``error``, the bytes
  ``sent`` and ``echoed`` and ``progress`` ([seconds, bytes echoed] every 0.5 s);
* ``{"op": "report", "id": ID}``: the pings so far, ``samples`` as [wall sent, rtt];
  ``errors``;
* ``{"op": "close", "id": ID}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from typing import Any

OPEN_TIMEOUT = 5.0
PING_TIMEOUT = 5.0


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.pingers: dict[str, asyncio.Task[None]] = {}
        self.samples: dict[str, list[list[float]]] = {}
        self.errors: dict[str, list[str]] = {}

    async def open(self, cid: str) -> dict[str, Any]:
        started = time.monotonic()
        wall = time.time()
        probe = f"open {cid}\n".encode()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(probe)
            await writer.drain()
            echo = await asyncio.wait_for(reader.readexactly(len(probe)), OPEN_TIMEOUT)
        except (ConnectionResetError, BrokenPipeError):
            return self._failed(cid, wall, started, "reset")
        except asyncio.IncompleteReadError:
            return self._failed(cid, wall, started, "eof")
        except TimeoutError:
            writer.close()
            return self._failed(cid, wall, started, "timeout")
        except OSError as error:
            return self._failed(cid, wall, started, f"{type(error).__name__}: {error}")
        assert echo == probe, echo
        self.conns[cid] = (reader, writer)
        return {"id": cid, "ok": True, "wall": wall, "seconds": time.monotonic() - started}

    def _failed(self, cid: str, wall: float, started: float, error: str) -> dict[str, Any]:
        seconds = time.monotonic() - started
        return {"id": cid, "ok": False, "wall": wall, "seconds": seconds, "error": error}

    async def _ping(self, cid: str, interval: float) -> None:
        reader, writer = self.conns[cid]
        samples = self.samples.setdefault(cid, [])
        errors = self.errors.setdefault(cid, [])
        sequence = 0
        while True:
            message = f"{sequence:015d}\n".encode()
            sent, wall = time.monotonic(), time.time()
            try:
                writer.write(message)
                echo = await asyncio.wait_for(reader.readexactly(len(message)), PING_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                errors.append(f"{type(error).__name__}: {error}")
                return
            if echo != message:
                errors.append(f"ping {sequence}: echo {echo!r}")
                return
            samples.append([wall, time.monotonic() - sent])
            sequence += 1
            await asyncio.sleep(interval)

    async def bulk(self, cid: str, size: int, timeout: float = 30.0) -> dict[str, Any]:
        reader, writer = self.conns[cid]
        started = time.monotonic()
        sent, echoed = hashlib.sha256(), hashlib.sha256()
        counts = {"sent": 0, "echoed": 0}
        progress: list[list[float]] = []  # [seconds, bytes echoed] every 0.5 s, for a failure

        async def watch() -> None:
            while True:
                await asyncio.sleep(0.5)
                progress.append([round(time.monotonic() - started, 2), counts["echoed"]])

        async def send() -> None:
            left = size
            while left:
                chunk = os.urandom(min(left, 65536))
                sent.update(chunk)
                writer.write(chunk)
                await writer.drain()
                left -= len(chunk)
                counts["sent"] += len(chunk)

        async def receive() -> None:
            left = size
            while left:
                chunk = await reader.read(min(left, 65536))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", left)
                echoed.update(chunk)
                left -= len(chunk)
                counts["echoed"] += len(chunk)

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait_for(asyncio.gather(send(), receive()), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            # how far it got, and when it stopped moving: a stall or only slow
            return {
                "id": cid, "ok": False, "error": f"{type(error).__name__}: {error}",
                **counts, "progress": progress,
            }  # fmt: skip
        finally:
            watcher.cancel()
        return {
            "id": cid,
            "ok": True,
            "sent_sha256": sent.hexdigest(),
            "echo_sha256": echoed.hexdigest(),
            "seconds": time.monotonic() - started,
        }

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op, cid = command["op"], str(command["id"])
        if op == "open":
            return await self.open(cid)
        if op == "ping":
            task = asyncio.create_task(self._ping(cid, float(command["interval"])))
            self.pingers[cid] = task
            return {"id": cid, "ok": True}
        if op == "bulk":
            return await self.bulk(cid, int(command["bytes"]), float(command.get("timeout", 30)))
        if op == "report":
            return {
                "id": cid,
                "samples": self.samples.get(cid, []),
                "errors": self.errors.get(cid, []),
            }
        if op == "close":
            task = self.pingers.pop(cid, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            _, writer = self.conns.pop(cid)
            writer.close()
            return {"id": cid, "ok": True}
        return {"id": cid, "ok": False, "error": f"unknown op {op!r}"}


async def client(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Client(host, port)
    print(json.dumps({"event": "ready"}), flush=True)
    while line := await reader.readline():
        print(json.dumps(await driver.handle(json.loads(line))), flush=True)


async def serve(host: str, port: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, host, port)
    print(json.dumps({"event": "ready"}), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    mode, address = sys.argv[1], sys.argv[2]
    host, _, port = address.rpartition(":")
    asyncio.run((serve if mode == "serve" else client)(host, int(port)))


if __name__ == "__main__":
    main()
