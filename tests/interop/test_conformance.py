"""``accessfabric conformance``: our node passes every check, the Go peer passes too, and
a peer with deliberate bugs fails exactly the checks of those bugs."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from accessfabric.conformance.check import CORE_GROUPS, GROUPS
from accessfabric.conformance.runner import select
from tests.interop.go_peer import go_acceptor
from tests.node.harness import run_cli, start_node


def conformance(url: str, peer_id: str, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("conformance", url, "--peer-id", peer_id, "--json", *extra, timeout=240)
    assert done.stderr == "", done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def failures(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["detail"] for c in report["checks"] if c["status"] != "passed"}


def test_our_node_passes_every_check(tmp_path: Path) -> None:
    node = start_node(tmp_path, "a")
    try:
        code, report = conformance(node.url, node.node_id)
    finally:
        node.kill()
    # Our node returns session credit as bytes arrive (ADR 0014): stalled streams never
    # exhaust it, and with a 1 MiB session window no single frame can overrun it
    # (tests/session/test_hostile.py overruns it with a small window).
    skipped = {c["id"]: c["detail"] for c in report["checks"] if c["status"] == "skipped"}
    assert list(skipped) == ["credit.session-overrun"], skipped
    assert "returns session credit as bytes arrive" in skipped["credit.session-overrun"]
    assert failures(report) == skipped
    assert code == 0
    assert report["passed"] == len(select()) - 1 >= 60 and report["skipped"] == 1
    assert {c["group"] for c in report["checks"]} == set(GROUPS)


def test_the_go_peer_passes_the_core_groups_and_the_rest(go_peer: Path) -> None:
    with go_acceptor(go_peer) as peer:
        code, report = conformance(peer.url, peer.node_id)
    core = [c for c in report["checks"] if c["group"] in CORE_GROUPS]
    assert len(core) == len(select(CORE_GROUPS)) >= 30
    assert failures(report) == {} and code == 0


def test_a_broken_peer_fails_exactly_its_bugs(go_peer: Path) -> None:
    with go_acceptor(go_peer, "-break", "stream-credit,service-code") as peer:
        code, report = conformance(
            peer.url, peer.node_id, "--group", "streams", "--group", "credit", "--timeout", "2"
        )
    assert code == 1
    failed = failures(report)
    assert set(failed) == {"credit.stream-overrun", "stream.unknown-service"}, failed
    assert (
        "expected RESET_STREAM SERVICE_UNAVAILABLE, got REFUSED_STREAM"
        in failed["stream.unknown-service"]
    )
    assert report["summary"] == f"{report['passed']} passed, 2 failed"


def test_text_report_and_usage_errors(tmp_path: Path) -> None:
    bad_url = run_cli("conformance", "wss://127.0.0.1:1/fabric", "--peer-id", "x")
    assert bad_url.returncode == 2 and "TCP+TLS only" in bad_url.stderr
    bad_id = run_cli("conformance", "tcp://127.0.0.1:1", "--peer-id", "afn1nope")
    assert bad_id.returncode == 2
    assert bad_id.stderr.startswith("accessfabric conformance: --peer-id")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = run_cli(
        "conformance", f"tcp://127.0.0.1:{port}", "--peer-id",
        "afn1f5if3b25irfxr26cgswq6t5esnggyhx42ppg",
    )  # fmt: skip
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
    assert "Traceback" not in bad_url.stderr + bad_id.stderr + unreachable.stderr
    node = start_node(tmp_path, "a")
    try:
        text = run_cli("conformance", node.url, "--peer-id", node.node_id, "--group", "ping")
    finally:
        node.kill()
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and lines[-1] == "3 passed, 0 failed"
    assert lines[0].startswith("PASS  ping.pong")


def test_the_scripted_peer_respects_a_small_session_and_stream_credit(tmp_path: Path) -> None:
    """A node whose windows are smaller than what the echo and frame-size checks send
    (256 KiB and 128 KiB against 32 KiB of stream and 64 KiB of session credit): the
    scripted peer sends what the credit allows and the rest as the node grants more, so
    the checks pass instead of the node rightly ending the session FLOW_CONTROL_ERROR."""
    node = start_node(
        tmp_path, "a",
        "[session]\ninitial_stream_window = 32768\ninitial_session_window = 65536\n"
        "urgent_session_reserve = 0",
    )  # fmt: skip
    try:
        code, report = conformance(
            node.url, node.node_id, "--group", "streams", "--group", "limits"
        )
    finally:
        node.kill()
    failed = {c["id"]: c["detail"] for c in report["checks"] if c["status"] == "failed"}
    assert failed == {} and code == 0, failed
    passed = {c["id"] for c in report["checks"] if c["status"] == "passed"}
    assert {"stream.echo", "stream.close-stream-end", "limits.our-max-frame-size"} <= passed
