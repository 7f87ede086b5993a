"""Scenario 4 with a real control plane: it stops during the run (SIGKILL), nothing breaks
until the phone's route leases expire, then the node says why; it comes back and new
streams work again.  The topology and processes: ``tests/relay/netns_control.py``.

Every stream is a TCP connection to the phone's ``[[forwards]]`` listener, carried
phone -> entry -> relaya|relayb -> home to a TCP echo server by route leases that
``control serve --route-lease-ttl`` makes short.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from accessfabric.sim import Topology, netns_unavailable_reason
from tests.relay.netns_control import SERVICE, ControlFabric, JsonLines

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LEASE_TTL = 5.0
MIN_LEASE_LEFT = 2.5
"""Seconds of lease left when the control plane is killed: time for new streams on it."""
BULK = 4 * 1024 * 1024


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _open_until_ok(client: JsonLines, cid: str, timeout: float) -> tuple[dict[str, Any], int]:
    """Open connection ``cid`` until it works; the answer and how many attempts failed."""
    deadline = time.monotonic() + timeout
    failed = 0
    while True:
        answer = client.ask(op="open", id=cid)
        if answer["ok"]:
            return answer, failed
        failed += 1
        assert time.monotonic() < deadline, f"no stream within {timeout} s: {answer}"
        time.sleep(0.2)


def _wait_for_fresh_leases(fabric: ControlFabric) -> None:
    """Return when the phone's cached leases have ``MIN_LEASE_LEFT`` or more to live:
    now, or right after the phone's control link renews them."""
    if fabric.lease_expiry("phone") - time.time() > MIN_LEASE_LEFT + 0.5:
        return
    fetched = fabric.route_document("phone").get("fetched_at")
    deadline = time.monotonic() + LEASE_TTL
    while fabric.route_document("phone").get("fetched_at") in (fetched, None):
        assert time.monotonic() < deadline, "the phone did not renew its route leases"
        time.sleep(0.02)


def _max_gap(samples: list[list[float]], start: float, end: float) -> float:
    """The longest time without an answered ping between ``start`` and ``end`` (wall)."""
    answered = [sent + rtt for sent, rtt in samples if start <= sent + rtt <= end]
    points = [start, *answered, end]
    return max(b - a for a, b in itertools.pairwise(points))


def test_control_plane_outage_leases_expire_then_recover(tmp_path: Path) -> None:
    with Topology(prefix="afc") as topo:
        print("logs in", tmp_path)
        fabric = ControlFabric(topo, tmp_path, route_lease_ttl=LEASE_TTL)
        client = fabric.start()

        # Enrolled, heartbeating, routes planned and leased: the forward carries a stream.
        _open_until_ok(client, "open-before", timeout=30)
        assert client.ask(op="ping", id="open-before", interval=0.02)["ok"]
        _wait_for_fresh_leases(fabric)
        killed_at = fabric.stop_control(signal.SIGKILL)
        expires = fabric.lease_expiry("phone")
        assert expires - killed_at > MIN_LEASE_LEFT, "the renewed lease has too little left"

        # New streams keep opening on the cached leases, and carry data.
        valid = client.ask(op="open", id="new-on-cache")
        assert valid["ok"], valid
        assert valid["wall"] < expires
        bulk = client.ask(op="bulk", id="new-on-cache", bytes=BULK, timeout=40)
        assert bulk["ok"] and bulk["sent_sha256"] == bulk["echo_sha256"], bulk
        assert time.time() < expires, "bulk ran past the lease expiry"
        time.sleep(max(0.0, expires - 0.8 - time.time()))
        late = client.ask(op="open", id="late-on-cache")
        assert late["ok"] and late["wall"] < expires, late

        # After the expiry a new stream is refused at once, with the reason.
        time.sleep(max(0.0, expires + 1.0 - time.time()))
        refused = client.ask(op="open", id="after-expiry")
        assert not refused["ok"], refused
        assert refused["error"] in ("reset", "eof"), refused  # closed, not hanging
        assert refused["seconds"] < 2.0, refused
        status = fabric.status("phone")
        log = fabric.log("phone")

        # The stream opened before the outage kept answering through it.
        pings = client.ask(op="report", id="open-before")
        assert not pings["errors"], pings["errors"]
        assert _max_gap(pings["samples"], killed_at, expires + 0.5) < 1.0

        # The control plane comes back on the same SQLite file: fresh leases, new streams.
        restarted_at = time.time()
        fabric.start_control()
        fabric.wait_control()
        serving_at = time.time()
        _, failed_after_restart = _open_until_ok(client, "after-restart", timeout=15)
        recovered_s = time.time() - restarted_at
        serving_to_stream_s = time.time() - serving_at
        assert fabric.lease_expiry("phone") > time.time()
        recovered = fabric.status("phone")["control"]

        # SIGTERM this time: still nothing breaks while the new leases are valid.
        _wait_for_fresh_leases(fabric)
        fabric.stop_control(signal.SIGTERM)
        after_term = client.ask(op="open", id="after-sigterm")
        pings_end = client.ask(op="report", id="open-before")

    print(
        "control outage:",
        {
            "lease_left_at_kill_s": round(expires - killed_at, 2),
            "refused_in_s": round(refused["seconds"], 3),
            "recovered_in_s": round(recovered_s, 2),
            "serving_to_stream_s": round(serving_to_stream_s, 2),
            "failed_opens_after_restart": failed_after_restart,
            "pings": len(pings_end["samples"]),
        },
    )
    control = status["control"]
    assert control["state"] == "unreachable", control
    error = control["route_lease_error"]
    assert error.startswith(f"{SERVICE}/reliable: no usable route lease"), error
    assert "the control plane is unreachable" in error, error
    assert "cached route leases expired" in error, error
    assert control["route_lease_error_s_ago"] < 5, control
    forwards = status["forwards"][0]
    assert forwards["failed"] >= 1, forwards
    assert "no route lease" in log and "cached route leases expired" in log, log[-3000:]
    assert "forward: no stream" in log
    assert recovered["state"] == "reachable", recovered
    assert recovered["route_lease_error"] == "-", recovered
    assert after_term["ok"], after_term
    assert not pings_end["errors"], pings_end["errors"]
