"""qh3 and aiopquic with client and server in two processes (``bench/quic_libs.py``'s bulk).

The fabric's two ends of a connection are different nodes, so a library that moves QUIC
work off the event loop's thread (aiopquic: picoquic in a thread of its own) may do
better apart than in one process.  Here the server runs in a child process
(``--serve LIBRARY``: prints its port, counts one bulk stream, answers ``b"done"``,
prints its CPU seconds when stdin closes); the parent dials it over ``127.0.0.1`` and
sends ``--mib`` MiB on one stream.  Rounds alternate the libraries' order.

Run: ``python -m accessfabric.bench.quic_two_process --rounds N [--mib 64]`` (aiopquic
only where it imports; ADR 0062).  ``--fabric``: the same with fabric sessions, one BULK
stream from a dialer node here to an acceptor node in the child, over TCP+TLS, the qh3
carrier and one aiopquic stream (``bench/quic_aiopquic_carrier.py``, bench only: the
parent hands the child the stand-in channel binding in its environment).
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
    """The run's key and certificate directory: made by the parent (:func:`main`), which
    hands it to its children in ``AF_QUIC_2P_CERTS`` and removes it at the end."""
    return Path(os.environ["AF_QUIC_2P_CERTS"])


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


FABRIC_KINDS = ("tcp_tls", "quic", "aiopquic")
ACCEPTOR_SEED = bytes(range(128, 160))
DIALER_SEED = bytes(range(160, 192))


def _fabric_node(seed: bytes, name: str) -> Any:
    from accessfabric.identity.keys import NodeKey
    from accessfabric.node.dialing.endpoints import LocalNode
    from accessfabric.session import SessionConfig

    return LocalNode(
        key=NodeKey.from_seed(seed),
        cert_dir=_cert_dir() / name,
        session_config=SessionConfig(pacing_target_delay=None),
    )


async def serve_fabric(kind: str, binding: bytes) -> None:
    """Child: the acceptor node; each session's first stream is read to its end and
    answered with its byte count (as ``carrier_extra.bulk_rate``'s receiver)."""
    from accessfabric.node.dialing.endpoints import serve_tcp
    from accessfabric.node.dialing.quic_endpoints import serve_quic
    from accessfabric.node.streams.connection import SessionConnection

    node = _fabric_node(ACCEPTOR_SEED, "acceptor")
    tasks: set[asyncio.Task[None]] = set()

    async def receive(connection: SessionConnection) -> None:
        await connection.ready()
        stream = await connection.accept_stream()
        assert stream is not None
        got = 0
        while chunk := await stream.read(1 << 20):
            got += len(chunk)
        stream.write(got.to_bytes(8, "big"))
        stream.close()

    def on_connection(connection: SessionConnection) -> None:
        task = asyncio.get_running_loop().create_task(receive(connection))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server: Any
    if kind == "tcp_tls":
        server = await serve_tcp(node, quic_common.HOST, 0, on_connection)
        port = server.sockets[0].getsockname()[1]
    elif kind == "quic":
        server = await serve_quic(node, quic_common.HOST, 0, on_connection)
        port = server.port
    else:
        from accessfabric.bench.quic_aiopquic_carrier import serve_sessions

        server, port = await serve_sessions(node, binding, on_connection)
    print(port, flush=True)
    cpu = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"server_cpu_s": time.process_time() - cpu}), flush=True)
    server.close()


async def dial_fabric(kind: str, port: int, binding: bytes, bulk_bytes: int) -> tuple[float, float]:
    """Parent: (MB/s, dialer CPU seconds) of one BULK stream to the child's node."""
    from contextlib import AsyncExitStack

    from accessfabric.identity.tls import write_certificate_files
    from accessfabric.node.dialing.endpoints import connect_tcp
    from accessfabric.node.dialing.quic_endpoints import connect_quic
    from accessfabric.wire.registry import TrafficClass

    node = _fabric_node(DIALER_SEED, "dialer")
    acceptor = _fabric_node(ACCEPTOR_SEED, "acceptor")
    peer_id = acceptor.key.node_id
    async with AsyncExitStack() as stack:
        if kind == "tcp_tls":
            dialer = await connect_tcp(node, quic_common.HOST, port, expected_peer_id=peer_id)
        elif kind == "quic":
            dialer = await connect_quic(node, quic_common.HOST, port, expected_peer_id=peer_id)
        else:
            from accessfabric.bench.quic_aiopquic_carrier import dial_session

            cert_path, _key = write_certificate_files(acceptor.key, acceptor.cert_dir)
            dialer = await stack.enter_async_context(
                dial_session(node, peer_id, cert_path, port, binding)
            )
        stack.callback(dialer.abort)
        await asyncio.wait_for(dialer.ready(), 10)
        piece = b"\xa5" * quic_common.PIECE
        cpu, started = time.process_time(), time.perf_counter()
        stream = await dialer.open_stream("bench", TrafficClass.BULK)
        for _ in range(bulk_bytes // quic_common.PIECE):
            stream.write(piece)
            await stream.drain()
        stream.close()
        assert int.from_bytes(await stream.readexactly(8), "big") == bulk_bytes
        return bulk_bytes / (time.perf_counter() - started) / 1e6, time.process_time() - cpu


def one_fabric(kind: str, bulk_bytes: int) -> dict[str, float]:
    """One two-process fabric bulk over ``kind``: MB/s and CPU s/GiB of each node."""
    binding = os.urandom(32)  # only the aiopquic bench pair uses it (no channel binding)
    child = subprocess.Popen(
        [sys.executable, "-m", "accessfabric.bench.quic_two_process", "--serve-fabric", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AF_QUIC_2P_BINDING": binding.hex()},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        rate, dialer_cpu = run_async(dial_fabric(kind, port, binding, bulk_bytes))
        child.stdin.close()
        acceptor_cpu = float(json.loads(child.stdout.readline())["server_cpu_s"])
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    gib = bulk_bytes / (1 << 30)
    name = f"fabric_{kind}"
    return {
        name: rate,
        f"{name}_dialer_cpu_s_gib": dialer_cpu / gib,
        f"{name}_acceptor_cpu_s_gib": acceptor_cpu / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=("qh3", "aiopquic"))
    parser.add_argument("--serve-fabric", choices=FABRIC_KINDS)
    parser.add_argument("--fabric", action="store_true", help="fabric sessions, not libraries")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    if args.serve:
        run_async(serve(args.serve))
        return
    if args.serve_fabric:
        binding = bytes.fromhex(os.environ["AF_QUIC_2P_BINDING"])
        run_async(serve_fabric(args.serve_fabric, binding))
        return
    with tempfile.TemporaryDirectory(prefix="af-quic-2p-") as certs:
        os.environ["AF_QUIC_2P_CERTS"] = certs  # the children's too
        _compare(args)


def _compare(args: argparse.Namespace) -> None:
    if args.fabric:
        kinds = list(FABRIC_KINDS if quic_aiopquic.available() else FABRIC_KINDS[:2])
        for number in range(args.rounds):
            row: dict[str, float] = {"round": number, "load1": os.getloadavg()[0]}
            quic_kinds = kinds[1:] if number % 2 == 0 else kinds[:0:-1]
            for kind in [kinds[0], *quic_kinds]:
                row.update(one_fabric(kind, args.mib << 20))
            print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        return
    libraries = ["qh3", "aiopquic"] if quic_aiopquic.available() else ["qh3"]
    ratios = []
    for number in range(args.rounds):
        row = {"round": number, "load1": os.getloadavg()[0]}
        for library in libraries if number % 2 == 0 else libraries[::-1]:
            row.update(one(library, args.mib << 20))
        print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        if "aiopquic" in row:
            ratios.append(row["aiopquic"] / row["qh3"])
    if ratios:
        print("aiopquic / qh3, two processes: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
