"""One fabric node process for the relay scenarios and ``bench relay``.

``python -m accessfabric.bench.relay_peer SPEC.json`` runs a :class:`NodeRuntime` built
from the spec (key seed, listen URL, static peers, authority key, static route leases,
sealing keys of the other nodes, ``allow``: service -> node ids that may open it (default
deny; ``["*"]`` for any), optionally ``tcp_rto_min``: seconds, ``null`` for the
kernel's), serves ``echo`` and ``sealed-sink`` (the node seals every stream that crosses
a relay), prints ``{"event": "ready"}`` on stdout, then runs the spec's workloads (if
any) and prints one JSON line per result.  Without workloads it runs until killed.

Workloads (``spec["workloads"]``, run concurrently):

* ``{"kind": "bulk", "bytes": N, "class": "bulk"}``: a sealed stream to ``sealed-sink``;
  ``progress`` lines every 4 MiB, then ``bulk_done`` with both SHA-256, the seconds and
  the ``cipher`` the records used (the node's ``[sealing] cipher``);
* ``{"kind": "ping", "interval": 0.02, "seconds": S}``: an interactive ``echo`` stream,
  one 16-byte ping at a time every ``interval``; ``ping_done`` lists
  ``[sent_at, rtt]`` (``time.monotonic``, shared by every process of the machine);
  with ``"after_bulk": A`` it also keeps pinging until ``A`` seconds after every bulk
  workload finished (pings on an idle stream, however long the bulk took); with
  ``"stop_file": PATH`` it stops before the next ping once ``PATH`` exists (the caller
  decides when it has measured enough; ``seconds`` is then a cap);
* ``{"kind": "open", "after": S, "label": L}``: ``S`` seconds after ``ready``, open a new
  interactive ``echo`` stream and send one ping; ``open`` reports ``ok`` and, when it
  failed, ``error`` (the exception's type and text, e.g. why no route lease is usable).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from accessfabric.bench.common import run_async
from accessfabric.bench.relay_lab import SEALED_SINK, SinkResults, new_initiator, sealed_sink
from accessfabric.bench.relay_lab import send_sealed as _send_sealed
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.signed import open_signed
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing.address import parse_endpoint_url
from accessfabric.node.runtime import NodeRuntime
from accessfabric.observe.log_format import configure_logging
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass

PROGRESS_EVERY = 4 * 1024 * 1024


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def build(spec: dict[str, Any], workdir: Path) -> NodeRuntime:
    key = NodeKey.from_seed(bytes.fromhex(spec["seed"]))
    peers = tuple(
        PeerConfig(node_id=p["node_id"], endpoints=(parse_endpoint_url(p["url"]),))
        for p in spec.get("peers", [])
    )
    session = SessionConfig(
        keepalive_interval=spec.get("keepalive", 1.0), ping_timeout=spec.get("ping_timeout", 2.0)
    )
    config = NodeConfig(
        key_path=workdir / f"{spec['name']}.key",
        cert_dir=workdir / spec["name"],
        listen=tuple(parse_endpoint_url(url) for url in spec.get("listen", [])),
        peers=peers,
        session=session,
        authority_key=bytes.fromhex(spec["authority_key"]),
        drain_timeout=1.0,
        tcp_rto_min=spec.get("tcp_rto_min", DEFAULT_RTO_MIN),
        allow={service: tuple(ids) for service, ids in spec.get("allow", {}).items()},
    )
    runtime = NodeRuntime(config, key=key)
    for node_id, sealing_key in spec.get("sealing_keys", {}).items():
        runtime.sealing_keys.add(node_id, bytes.fromhex(sealing_key))
    runtime.dispatcher.register(SEALED_SINK, sealed_sink(SinkResults()))
    runtime.routes.cooldown = spec.get("cooldown", 1.0)
    runtime.routes.stall_timeout = spec.get("stall_timeout", 3.0)
    authority = bytes.fromhex(spec["authority_key"])
    by_service: dict[tuple[str, TrafficClass], list[LeasedRoute]] = {}
    for blob_hex in spec.get("routes", []):
        blob = bytes.fromhex(blob_hex)
        lease = open_signed(blob, RouteLease, authority)
        for service in lease.allowed_services:
            for cls in lease.allowed_classes:
                by_service.setdefault((service, cls), []).append(LeasedRoute(lease, blob))
    for (service, cls), routes in by_service.items():
        runtime.routes.set_routes(service, cls, routes)
    return runtime


async def bulk(runtime: NodeRuntime, spec: dict[str, Any], work: dict[str, Any]) -> None:
    destination = bytes.fromhex(spec["sealing_keys"][spec["destination"]])
    assert runtime.routes.sealing is not None
    # the node's [sealing] cipher (default auto), as its own sealed streams would use
    cipher = runtime.routes.sealing.cipher
    initiator, token = new_initiator(runtime.key, destination, SEALED_SINK, cipher)
    cls = TrafficClass.from_name(work.get("class", "bulk"))
    started = time.monotonic()
    stream = await runtime.routes.open_stream(
        SEALED_SINK,
        cls,
        key_exchange=initiator.key_exchange,
        resume_token=token,
        resume_key=initiator.resume_key,
    )
    marks = [0]

    def progress(sent: int) -> None:
        if sent - marks[0] >= PROGRESS_EVERY:
            marks[0] = sent
            emit(event="progress", sent=sent, at=time.monotonic())

    sent_sha, confirmed = await _send_sealed(stream, initiator, int(work["bytes"]), progress)
    emit(
        event="bulk_done",
        sent_sha256=sent_sha,
        confirmed_sha256=confirmed,
        bytes=int(work["bytes"]),
        seconds=time.monotonic() - started,
        resumes=stream.resumes,
        cipher=initiator.suite.label,
        at=time.monotonic(),
    )


async def ping(runtime: NodeRuntime, work: dict[str, Any], bulks: BulkFinish) -> None:
    interval = float(work.get("interval", 0.02))
    stream = await runtime.routes.open_stream("echo", TrafficClass.INTERACTIVE)
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + float(work["seconds"])
    after_bulk = work.get("after_bulk")
    stop_file = work.get("stop_file")
    tick = time.monotonic()
    seq = 0
    while time.monotonic() < deadline or (
        after_bulk is not None and time.monotonic() < bulks.at + float(after_bulk)
    ):
        if stop_file is not None and os.path.exists(stop_file):
            break
        sent_at = time.monotonic()
        message = seq.to_bytes(8, "big") + b"pingpong"
        stream.write(message)
        echoed = await stream.readexactly(len(message))
        assert echoed == message, "echo mismatch"
        samples.append((sent_at, time.monotonic() - sent_at))
        seq += 1
        tick += interval
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        tick = max(tick, time.monotonic() - interval)
    stream.close()
    emit(event="ping_done", samples=samples, resumes=stream.resumes)


class BulkFinish:
    """When the last bulk workload finished (``inf`` while one runs)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.at = time.monotonic() if count == 0 else math.inf

    async def track(self, job: Awaitable[None]) -> None:
        """Run one bulk workload; finished also when it failed."""
        try:
            await job
        finally:
            self.left -= 1
            if self.left == 0:
                self.at = time.monotonic()


async def open_probe(runtime: NodeRuntime, work: dict[str, Any], ready_at: float) -> None:
    await asyncio.sleep(max(0.0, ready_at + float(work.get("after", 0.0)) - time.monotonic()))
    label = str(work.get("label", ""))
    started = time.monotonic()
    try:
        stream = await runtime.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"probe")
        echoed = await asyncio.wait_for(stream.readexactly(5), 10)
        assert echoed == b"probe", "echo mismatch"
        stream.close()
    except Exception as exc:  # reported, not raised: the test asserts on the text
        emit(event="open", label=label, ok=False, error=f"{type(exc).__name__}: {exc}",
             at=started, wall=time.time())  # fmt: skip
        return
    emit(event="open", label=label, ok=True, at=started, wall=time.time())


async def main(path: str) -> int:
    spec = json.loads(Path(path).read_text())
    configure_logging(json_lines=False)
    workdir = Path(spec.get("workdir", Path(path).parent))
    runtime = build(spec, workdir)
    await runtime.start()
    ready_at = time.monotonic()
    emit(event="ready", node_id=runtime.node_id, at=ready_at)
    jobs = []
    workloads = spec.get("workloads", [])
    bulks = BulkFinish(sum(work["kind"] == "bulk" for work in workloads))
    for work in workloads:
        if work["kind"] == "bulk":
            jobs.append(bulks.track(bulk(runtime, spec, work)))
        elif work["kind"] == "ping":
            jobs.append(ping(runtime, work, bulks))
        elif work["kind"] == "open":
            jobs.append(open_probe(runtime, work, ready_at))
    try:
        if jobs:
            results = await asyncio.gather(*jobs, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    emit(event="error", error=f"{type(result).__name__}: {result}")
            emit(event="counters", routes=runtime.routes.observations(),
                 failovers=runtime.routes.failovers)  # fmt: skip
        else:
            await asyncio.Event().wait()
    finally:
        await runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_async(main(sys.argv[1])))  # uvloop, as `node run`
