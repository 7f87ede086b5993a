"""A route lease request is answered before heartbeats read in the same loop turn (issue 17,
ADR 0056): a device waits on its lease to open a stream, on no heartbeat's answer.

Real sockets on loopback: heartbeats and then a lease request are written on their own
connections in one go, so the control plane reads them all in one turn of its loop; the
lease must be issued before any of those heartbeats is taken in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.server.api.verifier import INLINE_PER_TURN, INLINE_RESERVED
from accessfabric.control.server.plane import ControlPlane
from accessfabric.identity.keys import NodeKey
from tests.conditions import until
from tests.control.api_harness import Running, facts, running_plane
from tests.control.test_api_leases import RDP, Fleet, _json

HEARTBEATS = INLINE_PER_TURN - INLINE_RESERVED
"""Signed heartbeats within one turn's inline signature budget: without the yield, every
one of them would be checked and taken in before the lease's handler ran."""


def _raw(cp: Running, signer: RequestSigner, path: str, body: bytes) -> bytes:
    url = urlsplit(cp.url)
    headers = signer.headers("POST", path, body)
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _beat(host: NodeKey, i: int) -> object:
    return facts((host, 5.0), domain="dc-a", cpu=i / 100).to_json()


def _connections(cp: Running) -> int:
    low = cp.server._runner.server
    return 0 if low is None else len(low.connections)


def test_a_lease_request_is_answered_before_the_heartbeats_of_its_turn(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            fleet = Fleet()
            await fleet.enroll(cp)
            await fleet.beat(cp)
            status, grant = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            assert status == 200, grant  # the snapshot is built: the next lease plans on it

            order: list[str] = []
            plane: ControlPlane = cp.plane
            ingest, issue = plane.ingest_heartbeat, plane.leasing.issue

            def ingest_heartbeat(*args: object, **kwargs: object) -> object:
                order.append("heartbeat")
                return ingest(*args, **kwargs)  # type: ignore[arg-type]

            def issue_lease(*args: object, **kwargs: object) -> object:
                order.append("lease")
                return issue(*args, **kwargs)  # type: ignore[arg-type]

            plane.ingest_heartbeat = ingest_heartbeat  # type: ignore[method-assign]
            plane.leasing.issue = issue_lease  # type: ignore[method-assign]

            signer = RequestSigner(fleet.fast, clock=plane.clock)
            requests = [  # the relay's own heartbeats, the same links: distinct bodies
                _raw(
                    cp, signer, "/v1/heartbeat", _json(_beat(fleet.host, i))
                )  # (no replay refusal)
                for i in range(HEARTBEATS)
            ]
            lease_signer = RequestSigner(fleet.laptop, clock=plane.clock)
            requests.append(_raw(cp, lease_signer, "/v1/leases/route", _json(RDP)))

            url = urlsplit(cp.url)
            before = _connections(cp)
            streams = [await asyncio.open_connection(url.hostname, url.port) for _ in requests]
            await until(lambda: _connections(cp) >= before + len(requests), what="accepted")
            for (_, writer), request in zip(streams, requests, strict=True):
                writer.write(request)  # all in one turn of the loop: no await in between
            answers = [await reader.read() for reader, _ in streams]
            for _, writer in streams:
                writer.close()
            statuses = [answer.split(b" ", 2)[1] for answer in answers]
            assert statuses == [b"200"] * len(requests), answers[-1][:400]
            lease = json.loads(answers[-1].split(b"\r\n\r\n", 1)[1])
            assert lease["routes"][0]["hops"][0] == fleet.laptop.node_id
            assert order == ["lease"] + ["heartbeat"] * HEARTBEATS, order

    asyncio.run(main())
