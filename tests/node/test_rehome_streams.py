"""A stream opened while its device re-homes (issue 17).

Seen in ``sim fleet --kill-entry`` (1000 devices placed, 497 on the killed entry): every
stream that failed around the kill was opened 0.1-0.5 s after the SIGKILL, before the
device's loop had taken in that its entry's session ended; its cached lease still went
through the dead entry, the dial was refused, and ``open_stream`` gave up although the
route source, asked again, answers routes around a lost entry (``ControlLink``).

Real nodes on loopback (tests/relay/fabric.py): source -> relay 0 -> destination and
source -> relay 1 -> destination; relay 0 is killed, the source's route source answers
the route through relay 0 first (its cache) and through relay 1 when asked again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from accessfabric.bench.relay_lab import issue_route
from accessfabric.control.client.client import ControlRefused
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.identity.keys import NodeKey
from accessfabric.node import control_link
from accessfabric.node.routing.routes import NoUsableRoute
from accessfabric.wire.registry import TrafficClass
from tests.node.test_placement_rehome import _listing, _start_device, _start_entries, _until
from tests.relay.fabric import built, kill

ECHO = "echo"


async def test_a_stream_whose_cached_first_hop_just_died_asks_its_source_again(
    tmp_path: Path,
) -> None:
    async with built(tmp_path, relays=2) as fabric:
        src = fabric.source
        through_dead, around = fabric.routes([0], [1])
        answers = [[through_dead], [around]]  # the cache, then routes around the lost hop
        asked: list[int] = []

        async def source(service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
            asked.append(len(asked))
            return answers[min(len(asked), len(answers)) - 1]

        src.routes.source = source
        kill(fabric.relays[0])
        stream = await asyncio.wait_for(src.routes.open_stream(ECHO, TrafficClass.RELIABLE), 20)
        stream.write(b"while re-homing")
        assert await asyncio.wait_for(stream.readexactly(15), 20) == b"while re-homing"
        assert stream.connection.session.peer_node_id == fabric.relays[1].node_id
        assert len(asked) == 2  # once more, not more


async def test_a_source_with_nothing_new_is_asked_once_more_and_the_error_names_both(
    tmp_path: Path,
) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src = fabric.source
        (through_dead,) = fabric.routes([0])
        asked: list[int] = []

        async def source(service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
            asked.append(len(asked))
            if len(asked) > 1:  # what ControlLink.route_source raises when its wait ends
                raise NoUsableRoute("re-homing: no session with another entry within 15 s")
            return [through_dead]

        src.routes.source = source
        kill(fabric.relays[0])
        with pytest.raises(NoUsableRoute) as refused:
            await asyncio.wait_for(src.routes.open_stream(ECHO, TrafficClass.RELIABLE), 20)
        assert len(asked) == 2
        assert "unreachable" in str(refused.value)  # the refused dial ...
        assert "then: re-homing" in str(refused.value)  # ... and why no other route came


async def test_a_stream_waits_for_the_rehome_at_most_lost_lease_wait_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device whose entry died and whose alternate does not answer yet: the control
    plane knows no first hop of it (``no_route``); its stream waits ``LOST_LEASE_WAIT``
    and then fails saying the device is still re-homing (a wait of 0.5 s here)."""
    monkeypatch.setattr(control_link, "LOST_LEASE_WAIT", 0.5)
    entries = await _start_entries(tmp_path)
    primary, alternate = entries
    device = await _start_device(tmp_path)
    try:
        link = device.control
        assert link is not None
        link._apply_directory(_listing(primary, alternate))
        await _until("placed on the primary", lambda: primary.accepted_sessions == 1)
        for bound in alternate.listeners:  # the alternate does not answer yet ...
            bound.close()
        requests: list[str] = []

        async def no_route(service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
            requests.append(service)
            raise ControlRefused(409, "no_route", "no first hop of the device")

        monkeypatch.setattr(link.client, "route_leases", no_route)
        kill(primary)  # ... and the primary dies
        await _until("the device lost its entry", link._rehoming)
        started = time.monotonic()
        with pytest.raises(NoUsableRoute, match="re-homing: this device lost its entry") as no:
            await asyncio.wait_for(device.routes.open_stream("svc", TrafficClass.RELIABLE), 20)
        assert 0.5 <= time.monotonic() - started < 10.0
        assert primary.node_id in str(no.value) and "within 0.5 s" in str(no.value)
        assert len(requests) == 1  # no second lease request for a device still re-homing
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()


async def test_a_lease_through_the_dead_entry_stays_unused_after_its_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen at 1000 devices: 10 s after the SIGKILL (``LOST_ENTRY_AVOID`` over) devices
    already on the other entry, which had streamed nothing while they re-homed, opened
    their next stream on the cached lease through the dead entry.  A lease issued before
    its first hop's session ended is skipped until a session with it is held again."""
    entries = await _start_entries(tmp_path)
    primary, alternate = entries
    device = await _start_device(tmp_path)
    try:
        link = device.control
        assert link is not None
        authority = Authority(NodeKey.generate())
        host = NodeKey.generate().node_id
        old = issue_route(authority, 1, [device.node_id, primary.node_id, host])
        new = issue_route(authority, 2, [device.node_id, alternate.node_id, host])
        link._apply_directory(_listing(primary, alternate))
        await _until("placed on the primary", lambda: primary.accepted_sessions == 1)
        requests: list[str] = []

        async def fresh(service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
            requests.append(service)
            return [new]

        monkeypatch.setattr(link.client, "cached_route_leases", lambda *_: [old])
        monkeypatch.setattr(link.client, "route_leases", fresh)
        kill(primary)
        await _until("re-homed", lambda: alternate.accepted_sessions == 1, seconds=15.0)
        link._lost.clear()  # LOST_ENTRY_AVOID is over
        assert not link._rehoming()
        assert await link.route_source("svc", TrafficClass.RELIABLE) == [new]
        assert requests == ["svc"]
    finally:
        await device.shutdown()
        for entry in entries:
            await entry.shutdown()
