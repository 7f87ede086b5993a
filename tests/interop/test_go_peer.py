"""A peer on another TLS stack: the Go program in ``interop/go-peer`` (crypto/tls,
tls-exporter) against real ``node run`` and ``accessfabric smoke`` processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.interop.go_peer import go_acceptor
from tests.node.harness import smoke, start_node

VECTORS = Path(__file__).parents[1] / "vectors"


def test_go_checks_the_auth_vector(go_peer: Path) -> None:
    """Go's HKDF, SHA-256 and Ed25519 reproduce tests/vectors/auth.json."""
    done = subprocess.run(
        [str(go_peer), "vectors", str(VECTORS / "auth.json")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout


def test_go_dialer_against_a_real_node(go_peer: Path, tmp_path: Path) -> None:
    node = start_node(tmp_path, "a")
    try:
        done = subprocess.run(
            [str(go_peer), "dial", "-addr", f"127.0.0.1:{node.port}", "-peer-id", node.node_id,
             "-bytes", str(3 << 20)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"session up: peer {node.node_id} version 2"
        assert f"echo: {3 << 20} bytes" in lines
        assert lines[-2:] == ["goaway: drained, carrier closed", "ok"]
        # The node saw the Go peer's GOAWAY(NO_ERROR) and drained, with no error.
        ended = node.wait_for("session ended", code="NO_ERROR")
        assert ended["reason"] == "drained"
    finally:
        node.kill()


def test_go_dialer_with_the_wrong_peer_id_is_refused(go_peer: Path, tmp_path: Path) -> None:
    node = start_node(tmp_path, "a")
    try:
        stranger = "afn1f5if3b25irfxr26cgswq6t5esnggyhx42ppg"  # docs/identity.md, all-zero seed
        done = subprocess.run(
            [str(go_peer), "dial", "-addr", f"127.0.0.1:{node.port}", "-peer-id", stranger],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        assert "code 11" in done.stdout and "expected " + stranger in done.stdout
    finally:
        node.kill()


def test_smoke_against_the_go_acceptor(go_peer: Path) -> None:
    with go_acceptor(go_peer) as peer:
        done = smoke(peer.url, peer.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[0].startswith(f"session up: peer {peer.node_id} via")
        assert "echo: 4096 bytes" in done.stdout and done.stdout.splitlines()[-1] == "ok"
        # A pinned id the Go peer does not hold: identity mismatch, exit 5.
        wrong = smoke(peer.url, "afn1f5if3b25irfxr26cgswq6t5esnggyhx42ppg")
        assert wrong.returncode == 5, wrong.stdout + wrong.stderr
        assert "identity mismatch" in wrong.stderr
