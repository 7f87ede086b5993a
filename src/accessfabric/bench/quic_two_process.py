"""qh3 and aiopquic with client and server in two processes (``bench/quic_libs.py``'s bulk).

The fabric's two ends of a connection are different nodes, so a library that moves QUIC
work off the event loop's thread (aiopquic: picoquic in a thread of its own) may do
better apart than in one process.  Here the server runs in a child process
(``--serve LIBRARY``: prints its port, counts one bulk stream, answers ``b"done"``,
prints its CPU seconds when stdin closes); the parent dials it over ``127.0.0.1`` and
sends ``--mib`` MiB on one stream.  Rounds alternate the libraries' order.

Run: ``python -m accessfabric.bench.quic_two_process --rounds N [--mib 64]`` (aiopquic
only where it imports; ADR 0062).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench import quic_aiopquic, quic_common, quic_libs
from accessfabric.bench.common import BenchNode, run_async
from accessfabric.identity.tls import write_certificate_files


def _cert_dir() -> Path:
    return Path(os.environ.get("AF_QUIC_2P_CERTS", tempfile.gettempdir())) / "af-quic-2p"


async def serve(library: str) -> None:
    """Child: serve ``library`` on a free port, print it, wait for stdin to close."""
    node = BenchNode.make(quic_common.SERVER_SEED, _cert_dir())
    loop = asyncio.get_running_loop()
    if library == "qh3":
        from accessfabric.carriers.quic_adapter import create_udp_endpoint
        from accessfabric.carriers.quic_server import batching_quic_server

        aio, configuration_class, events, _ = quic_libs.library_modules("qh3")
        server_config, _client = quic_libs.configurations("qh3", configuration_class, node)
        server: Any = batching_quic_server(server_config, quic_libs.server_protocol(aio, events))
        await create_udp_endpoint(lambda: server, quic_common.HOST, 0)
        port = server._transport.get_extra_info("sockname")[1]
    else:
        import importlib

        server_module = importlib.import_module("aiopquic.asyncio.server")
        protocol_module = importlib.import_module("aiopquic.asyncio.protocol")
        configuration_class = importlib.import_module(
            "aiopquic.quic.configuration"
        ).QuicConfiguration
        events = importlib.import_module("aiopquic.quic.events")
        server_class, _ = quic_aiopquic.bench_protocols(
            protocol_module.QuicConnectionProtocol, events.StreamDataReceived
        )
        cert_path, key_path = write_certificate_files(node.key, node.cert_dir)
        server_config = configuration_class(
            is_client=False,
            alpn_protocols=["afbench"],
            max_data=quic_common.WINDOW,
            max_stream_data=quic_common.WINDOW,
        )
        server_config.load_cert_chain(str(cert_path), str(key_path))
        port = quic_aiopquic.free_udp_port()
        server = await server_module.serve(
            quic_common.HOST, port, configuration=server_config, create_protocol=server_class
        )
    print(port, flush=True)
    cpu = time.process_time()
    await loop.run_in_executor(None, sys.stdin.read)
    print(json.dumps({"server_cpu_s": time.process_time() - cpu}), flush=True)
    server.close()


async def client_bulk(library: str, port: int, bulk_bytes: int) -> tuple[float, float]:
    """Parent: (MB/s, client CPU seconds) of one stream of ``bulk_bytes`` to ``port``."""
    node = BenchNode.make(quic_common.SERVER_SEED, _cert_dir())
    piece = bytes(quic_common.PIECE)
    if library == "qh3":
        aio, configuration_class, events, _ = quic_libs.library_modules("qh3")
        _server, client_config = quic_libs.configurations("qh3", configuration_class, node)
        protocol = quic_libs.client_protocol(aio, events)
        async with aio.connect(
            quic_common.HOST, port, configuration=client_config, create_protocol=protocol
        ) as client:
            quic = client._quic
            stream_id = quic.get_next_available_stream_id()
            done = client.expect(4)
            cpu, started = time.process_time(), time.perf_counter()
            quic.send_stream_data(stream_id, quic_common.BULK)
            sent = 0
            while sent < bulk_bytes:
                chunk = piece[: min(len(piece), bulk_bytes - sent)]
                sent += len(chunk)
                quic.send_stream_data(stream_id, chunk, end_stream=sent >= bulk_bytes)
            client.transmit()
            await done
            return bulk_bytes / (time.perf_counter() - started) / 1e6, time.process_time() - cpu
    import importlib

    client_module = importlib.import_module("aiopquic.asyncio.client")
    protocol_module = importlib.import_module("aiopquic.asyncio.protocol")
    configuration_class = importlib.import_module("aiopquic.quic.configuration").QuicConfiguration
    events = importlib.import_module("aiopquic.quic.events")
    _, client_class = quic_aiopquic.bench_protocols(
        protocol_module.QuicConnectionProtocol, events.StreamDataReceived
    )
    cert_path, _key = write_certificate_files(node.key, node.cert_dir)
    client_config = configuration_class(
        is_client=True,
        alpn_protocols=["afbench"],
        max_data=quic_common.WINDOW,
        max_stream_data=quic_common.WINDOW,
        cafile=str(cert_path),
        server_name=node.key.node_id,
    )
    async with client_module.connect(
        quic_common.HOST, port, configuration=client_config, create_protocol=client_class
    ) as client:
        quic = client._quic
        stream_id = quic.get_next_available_stream_id()
        done = client.expect(4)
        cpu, started = time.process_time(), time.perf_counter()
        await quic.send_stream_data_drained(stream_id, quic_common.BULK)
        sent = 0
        while sent < bulk_bytes:
            chunk = piece[: min(len(piece), bulk_bytes - sent)]
            sent += len(chunk)
            await quic.send_stream_data_drained(stream_id, chunk, end_stream=sent >= bulk_bytes)
        await done
        return bulk_bytes / (time.perf_counter() - started) / 1e6, time.process_time() - cpu


def one(library: str, bulk_bytes: int) -> dict[str, float]:
    """One two-process bulk run of ``library``: MB/s and CPU s/GiB of each side."""
    child = subprocess.Popen(
        [sys.executable, "-m", "accessfabric.bench.quic_two_process", "--serve", library],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        rate, client_cpu = run_async(client_bulk(library, port, bulk_bytes))
        child.stdin.close()
        server_cpu = float(json.loads(child.stdout.readline())["server_cpu_s"])
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    gib = bulk_bytes / (1 << 30)
    return {
        library: rate,
        f"{library}_client_cpu_s_gib": client_cpu / gib,
        f"{library}_server_cpu_s_gib": server_cpu / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=("qh3", "aiopquic"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    if args.serve:
        run_async(serve(args.serve))
        return
    libraries = ["qh3", "aiopquic"] if quic_aiopquic.available() else ["qh3"]
    _cert_dir().mkdir(parents=True, exist_ok=True)
    ratios = []
    for number in range(args.rounds):
        row: dict[str, float] = {"round": number, "load1": os.getloadavg()[0]}
        for library in libraries if number % 2 == 0 else libraries[::-1]:
            row.update(one(library, args.mib << 20))
        print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        if "aiopquic" in row:
            ratios.append(row["aiopquic"] / row["qh3"])
    if ratios:
        print("aiopquic / qh3, two processes: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
