"""A migrated QUIC session whose first PING is lost (the new network came up after the old
address went) is pinged again until it answers, not aborted at the probe's timeout; an
unmigrated session that never answers is still aborted."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from accessfabric.node.dialing import network_watch
from accessfabric.node.dialing.network_watch import NetworkWatch


class Session:
    """What the watch's probe uses of a ``SessionConnection``."""

    def __init__(self, *, migrates: bool, lost: int) -> None:
        self.migrates = migrates
        self.lost = lost  # the first ``lost`` PINGs never get an answer
        self.pings = 0
        self.aborted = False
        self.session = SimpleNamespace(rtt=SimpleNamespace(srtt=0.01), peer_node_id="afn1peer")
        self.info = SimpleNamespace(peer_address="192.0.2.9:7443", local_address="")

    async def migrate(self) -> bool:
        return self.migrates

    async def ping(self) -> float:
        self.pings += 1
        if self.pings <= self.lost:
            await asyncio.Event().wait()  # lost on the way: no PONG ever
        await asyncio.sleep(0.01)
        return 0.01

    def abort(self) -> None:
        self.aborted = True


async def test_a_migrated_session_is_pinged_again_until_it_answers() -> None:
    watch = NetworkWatch(list)
    moved = Session(migrates=True, lost=2)
    started = asyncio.get_running_loop().time()
    await watch._probe(cast(Any, moved))
    took = asyncio.get_running_loop().time() - started
    assert not moved.aborted and moved.pings == 3 and watch.migrated == 1
    assert took < network_watch.PROBE_MIN, took  # answered well before the probe's timeout


async def test_a_session_that_never_answers_is_aborted() -> None:
    watch = NetworkWatch(list)
    dead = Session(migrates=False, lost=100)
    await watch._probe(cast(Any, dead))
    assert dead.aborted and dead.pings == 1 and watch.aborted == 1
