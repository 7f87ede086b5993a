"""HostIngress limits without a fleet: connections beyond ``max_connections`` are refused
at once with 503 while the others wait for their streams."""

from __future__ import annotations

import asyncio

from accessfabric.node.config.ingress_config import IngressConfig
from accessfabric.node.dialing.address import HostPort
from accessfabric.services.ingress import HostIngress
from tests.stuck_opener import StuckOpener


def test_connections_over_the_limit_get_503() -> None:
    async def main() -> None:
        opener = StuckOpener()
        config = IngressConfig(
            listen=HostPort(host="127.0.0.1", port=0), protocol="http",
            hosts={"web.example": "web"}, max_connections=2,
        )  # fmt: skip
        ingress = HostIngress(opener, config)
        await ingress.start()
        request = b"GET / HTTP/1.1\r\nHost: web.example\r\n\r\n"
        held = []
        try:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
                writer.write(request)
                held.append(writer)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(opener.asked) < 2:
                assert loop.time() < deadline, "the two connections never asked for streams"
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"too many connections" in answer
            writer.close()
            assert ingress.status()["refused"] == 1 and ingress.status()["active"] == 2
        finally:
            for writer in held:
                writer.close()
            await ingress.close()

    asyncio.run(main())
