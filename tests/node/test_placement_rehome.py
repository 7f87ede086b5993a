"""Session placement on the device (issue 17): with a directory ``placement``, a device
holds one session, with its primary entry only; when that entry dies it re-homes to its
alternate by itself (no control-plane cycle needed), within a few seconds.

Three in-process nodes on loopback: two entries listening, a device whose control plane
never answers (only the directory it applies matters).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

from accessfabric.control.kernel.authority import Authority
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ControlSettings, NodeConfig
from accessfabric.node.control_link import (
    REHOME_FAST_RETRIES,
    REHOME_RETRY_CAP,
    probe_retry_delay,
)
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.serving.admission import AdmissionLimits
from tests.relay.fabric import LOOPBACK


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _until(what: str, condition: object, seconds: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, what
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _start_entries(
    tmp_path: Path, limits: list[AdmissionLimits] | None = None
) -> list[NodeRuntime]:
    """Two entries listening on loopback (``limits``: each one's admission limits)."""
    entries = []
    for index, name in enumerate(("e1", "e2")):
        extra = {} if limits is None else {"limits": limits[index]}
        entry = NodeRuntime(
            NodeConfig(key_path=tmp_path / f"{name}.key", cert_dir=tmp_path / name,
                       listen=(LOOPBACK,), drain_timeout=0.2, **extra),
            key=NodeKey.generate(),
        )  # fmt: skip
        await entry.start()
        entries.append(entry)
    return entries


async def _start_device(tmp_path: Path) -> NodeRuntime:
    """A mobile device whose control plane never answers (only the directory it is handed
    matters)."""
    authority = Authority(NodeKey.generate())
    device = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "d.key", cert_dir=tmp_path / "d", roles=("mobile-edge",),
            authority_key=authority.public_key, drain_timeout=0.2,
            control=ControlSettings(
                url=f"http://127.0.0.1:{_closed_port()}", authority_key=authority.public_key,
                state_dir=tmp_path / "d.control",
            ),
        ),
        key=NodeKey.generate(),
    )  # fmt: skip
    await device.start()
    return device


def _listing(*listed: NodeRuntime) -> dict[str, object]:
    """A directory listing ``listed``, placed in that order."""
    return {
        "version": len(listed),
        "entries": [
            {"node_id": e.node_id, "endpoints": [e.listeners[0].endpoint.url]} for e in listed
        ],
        "placement": [e.node_id for e in listed],
    }


async def test_device_holds_its_placed_entry_and_rehomes_to_the_alternate(
    tmp_path: Path,
) -> None:
    entries = await _start_entries(tmp_path)
    primary, alternate = entries
    device = await _start_device(tmp_path)
    try:
        link = device.control
        assert link is not None
        directory = _listing(primary, alternate)
        link._apply_directory(directory)
        await _until(
            "the device holds a session with its primary", lambda: primary.accepted_sessions == 1
        )
        for _ in range(5):  # more cycles: it stays, and never dials the alternate
            link._apply_directory(directory)
            await asyncio.sleep(0.1)
        assert primary.accepted_sessions == 1
        assert alternate.accepted_sessions == 0

        for bound in primary.listeners:  # the primary dies: no listener, sessions cut
            bound.close()
        for connection in list(primary._accepted):
            connection.abort()
        took = await _until(
            "the device re-homed to its alternate",
            lambda: alternate.accepted_sessions == 1,
            seconds=15.0,
        )
        assert took < 10.0  # jitter (<= 2 s) twice, one failed dial, one handshake
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()


async def test_device_stays_on_its_entry_while_a_directory_leaves_it_out(tmp_path: Path) -> None:
    """The cause of devices holding sessions with both entries (issue 17): the control
    plane marks an entry unreachable when its heartbeat is late (entries heartbeating
    every 5 s against a 1 s policy: unreachable after 4.5 s), and a directory fetched then
    lists only the other entry.  The device must not dial it while its own entry's
    session lives; once that session ends, it does."""
    entries = await _start_entries(tmp_path)
    primary, alternate = entries
    device = await _start_device(tmp_path)

    try:
        link = device.control
        assert link is not None
        link._apply_directory(_listing(primary, alternate))
        await _until(
            "the device holds its primary",
            lambda: device.peers.current(primary.node_id) is not None and not link._probes,
        )
        for _ in range(3):  # the primary late at the control plane, then back, then late
            link._apply_directory(_listing(alternate))
            # _place starts any dial at once (a probe task): none was started
            assert not link._probes and not device.peers.dialing(alternate.node_id)
            assert device.peers.current(alternate.node_id) is None
            link._apply_directory(_listing(primary, alternate))
            assert not link._probes
        assert primary.accepted_sessions == 1

        link._apply_directory(_listing(alternate))  # late once more, and this time ...
        for connection in list(primary._accepted):  # ... the primary's session really ends
            connection.abort()
        await _until(
            "the device moved to the entry its directory lists",
            lambda: alternate.accepted_sessions == 1,
            seconds=15.0,
        )
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()


async def test_device_refused_with_a_retry_hint_moves_to_its_alternate(tmp_path: Path) -> None:
    """An entry over its tenant's session cap refuses with GOAWAY ENHANCE_YOUR_CALM and a
    retry hint (node/serving/tenant_admission.py): the device leaves that entry alone for the
    hinted time and holds its alternate instead of redialling the refusing entry."""
    caps = [
        AdmissionLimits(max_sessions_per_tenant=cap, tenant_retry_after=30.0) for cap in (0, 100)
    ]  # e1 admits no session of any tenant
    entries = await _start_entries(tmp_path, caps)
    refusing, alternate = entries
    device = await _start_device(tmp_path)
    try:
        link = device.control
        assert link is not None
        link._apply_directory(_listing(refusing, alternate))
        await _until("the device holds its alternate", lambda: alternate.accepted_sessions == 1)
        assert refusing.local.admission.tenants.refused == {"": 1}  # refused once, left alone
        assert link._probe_failures[refusing.node_id][1] - time.time() > 20  # the hint held
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()


async def test_a_refused_rehome_dial_is_retried_after_its_back_off(tmp_path: Path) -> None:
    """The alternate's handshake budget refuses the re-home dial (a crowd re-homing at
    once): the device dials again once the back-off ends, without a control cycle (its
    control plane never answers here; before ADR 0037 it waited for one)."""
    slow = AdmissionLimits(handshakes_per_second=0.2, handshake_burst=1)
    entries = await _start_entries(tmp_path, [AdmissionLimits(), slow])
    primary, alternate = entries
    device = await _start_device(tmp_path)
    try:
        link = device.control
        assert link is not None
        link._apply_directory(_listing(primary, alternate))
        await _until("the device holds its primary", lambda: primary.accepted_sessions == 1)
        host, port = alternate.listeners[0].endpoint.address.rsplit(":", 1)
        _, spend = await asyncio.open_connection(host, int(port))  # the budget's one token
        spend.close()
        for bound in primary.listeners:
            bound.close()
        for connection in list(primary._accepted):
            connection.abort()
        await _until(
            "the device re-homed after a refused dial",
            lambda: alternate.accepted_sessions == 1,
            seconds=20.0,
        )
        assert alternate.local.admission.refused["handshake budget"] >= 1  # refused first
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()


def test_a_refused_rehome_dial_retries_within_seconds_then_backs_off() -> None:
    """A crowd re-homing onto an entry whose handshake budget refuses part of it (refused
    at accept, before TLS): each refused device tries again within REHOME_RETRY_CAP
    seconds for its first REHOME_FAST_RETRIES failures, not after a doubling back-off
    (8-16 s by the fourth refusal: 18 s for ~490 devices at 1000, ADR 0043); an entry
    that keeps failing is then backed off from as any probe.  Other probes back off
    as before."""
    rng = random.Random(7)
    for failures in range(1, REHOME_FAST_RETRIES + 1):
        delays = [probe_retry_delay(failures, rng, rehome=True) for _ in range(50)]
        assert max(delays) <= REHOME_RETRY_CAP
    later = [probe_retry_delay(REHOME_FAST_RETRIES + 1, rng, rehome=True) for _ in range(50)]
    assert min(later) > REHOME_RETRY_CAP * 4
    assert min(probe_retry_delay(4, rng) for _ in range(50)) >= 8.0  # a plain probe
