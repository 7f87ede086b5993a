"""A TCP echo server on a loopback port: the service the nodes under test forward to."""

from __future__ import annotations

import asyncio


async def echo_server() -> asyncio.Server:
    """Echo every byte back until the client closes; stop it with ``close()``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)
