"""The Go peer seals: a version 4 (Noise IK, flynn/noise) sealed echo stream from the Go
program through a Python relay to a Python destination node, written from
docs/sealing.md.  The relay forwards every byte and never sees the plaintext; the
destination serves it sealed; a Go opener that names the wrong destination key is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from accessfabric.bench.relay_lab import issue_route
from accessfabric.identity.keys import NodeKey
from accessfabric.sealing.handshake import parse_key_exchange
from tests.relay.fabric import build
from tests.relay.test_sealed_forward import Recorder, signed_record

MARKER = b"go-sealed-plaintext-marker"


VECTORS = Path(__file__).parents[1] / "vectors"


def test_go_reproduces_the_sealing_vectors(go_peer: Path) -> None:
    """flynn/noise and the Go record layer make tests/vectors/sealing.json's key exchange
    and records byte for byte from its fixed secrets, and read the destination's side."""
    done = subprocess.run(
        [str(go_peer), "sealing-vectors", str(VECTORS / "sealing.json")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


async def _go_sealed(go_peer: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(go_peer), "sealed", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_go_peer_seals_an_echo_stream_through_a_relay(
    go_peer: Path, tmp_path: Path
) -> None:
    fabric = await build(tmp_path, relays=1)
    try:
        relay, dst = fabric.relays[0], fabric.destination
        seed = os.urandom(32)
        go_key = NodeKey.from_seed(seed)
        dst.access.allow["echo"] = frozenset({go_key.node_id})
        route = issue_route(fabric.authority, 77, [go_key.node_id, relay.node_id, dst.node_id])
        recorder = Recorder(relay)
        dst_key = fabric.sealing_key(dst.node_id)
        assert dst_key is not None
        common = [
            "-addr", f"127.0.0.1:{relay.listeners[0].endpoint.port}", "-peer-id", relay.node_id,
            "-seed", seed.hex(), "-route-id", "77", "-lease", route.blob.hex(),
            "-record", signed_record(fabric.authority, go_key).hex(),
        ]  # fmt: skip
        size = 300_000
        for suite in (1, 2):
            code, out = await _go_sealed(
                go_peer, *common, "-dest-key", dst_key.hex(), "-suite", str(suite),
                "-bytes", str(size), "-text", MARKER.decode() + " ",
            )  # fmt: skip
            assert code == 0, out
            assert f"key exchange: version 4 suite {suite}" in out
            assert f"sealed echo: {size} bytes" in out and out.splitlines()[-1] == "ok"
        assert dst.data_plane.router.sealed == 2
        # the destination learned the Go peer's sealing key from the record in its exchange
        assert dst.sealing_keys.get(go_key.node_id) == go_key.sealing_public_key_bytes
        parsed = [parse_key_exchange(blob) for blob in recorder.key_exchanges]
        assert [p.opener_node_id for p in parsed if p is not None] == [go_key.node_id] * 2
        assert recorder.total > 4 * size  # the relay forwarded both ways, both streams ...
        assert not recorder.saw(MARKER[:12]), "the relay saw plaintext"  # ... never plaintext
        # Its own sealed stream with a wrong destination key: refused, nothing served.
        wrong = NodeKey.generate().sealing_public_key_bytes
        code, out = await _go_sealed(go_peer, *common, "-dest-key", wrong.hex())
        assert code == 1 and "sealed echo" in out, out
        assert dst.data_plane.router.refused.get("sealing") == 1
        assert dst.data_plane.router.sealed == 2
    finally:
        await fabric.stop()
