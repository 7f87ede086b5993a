"""The operator's drain of this node (``accessfabric control drain NODE``).

The control plane says ``draining`` in its heartbeat reply
(:mod:`accessfabric.control.server.drains`); the control link hands it to
:meth:`OperatorDrain.set`.  While drained the node

* refuses new sessions: a session that completes its handshake gets GOAWAY ``NO_ERROR``
  ("drained by the operator") at once, so its peer opens its streams elsewhere;
* lets the streams of the sessions it accepted finish, and sends each such session GOAWAY
  ``NO_ERROR`` as soon as it has no live stream — a transfer under way completes where it
  is, and the peer (a device) moves to the entry its directory now places it on.  Idle
  sessions are left alone for the first ``settle`` seconds (1.5 heartbeat intervals +
  1 s, ``control_link.DRAIN_SETTLE_*``): the
  devices learn the drain from their own directories within that time and move by
  themselves, with route leases around the node, instead of meeting a GOAWAY while their
  leases still go through it;
* ``drain_timeout`` seconds after that sends GOAWAY to the sessions still busy: their streams
  may still finish (GOAWAY ``NO_ERROR`` refuses only new streams), and a source's route
  execution resumes routed streams on an alternate route (docs/relays.md);
* reports itself not ready (``/readyz``: "drained by the operator").

The sessions the node dialled itself (to service hosts, relays) stay: they carry the
streams still running.  An undrain (the reply says ``draining: false`` again) ends it:
new sessions are accepted again; sessions already told GOAWAY are not taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from accessfabric.errors import ErrorCode
from accessfabric.observe.log_format import log_event
from accessfabric.timeouts import cancel_and_wait

if TYPE_CHECKING:
    from accessfabric.node.admin.observability import NodeObservability
    from accessfabric.node.config.node_config import NodeConfig
    from accessfabric.node.streams.connection import SessionConnection

log = logging.getLogger(__name__)

REASON = "drained by the operator"
POLL_INTERVAL = 0.1
"""Seconds between two looks at the accepted sessions' streams while draining."""
LIVE_STATES = frozenset({"open", "half-closed-local", "half-closed-remote"})


def live_streams(connection: SessionConnection) -> int:
    """Streams of ``connection`` that still carry data (open or half closed)."""
    return sum(1 for s in connection.session.metrics().streams if s.state in LIVE_STATES)


class DrainedNode(Protocol):
    """What a drain needs of the node (``NodeRuntime``)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def observe(self) -> NodeObservability: ...

    @property
    def accepted_sessions(self) -> int: ...

    def accepted_connections(self) -> list[SessionConnection]: ...


class OperatorDrain:
    """Drains a node's accepted sessions while the operator says so."""

    def __init__(self, runtime: DrainedNode) -> None:
        self.runtime = runtime
        self.active = False
        self.since: float | None = None
        self.told = 0
        """Sessions sent GOAWAY by this drain."""
        self.cut = 0
        """... of which still had streams when ``drain_timeout`` passed."""
        self._task: asyncio.Task[None] | None = None
        self.bound = 0.0
        """Seconds after the drain began when busy sessions are told GOAWAY too."""

    def set(self, draining: bool, *, settle: float = 0.0) -> None:
        """Start or end the drain (the control plane's word, every heartbeat); ``settle``:
        seconds before idle sessions are told GOAWAY (the heartbeat interval)."""
        if draining == self.active:
            return
        runtime = self.runtime
        observe = runtime.observe
        self.active = draining
        if draining:
            loop = asyncio.get_running_loop()
            self.since = loop.time()
            self.told = self.cut = 0
            observe.ready, observe.not_ready_reason = False, REASON
            log_event(
                log, "node drained by the operator", sessions=runtime.accepted_sessions,
                timeout=runtime.config.drain_timeout,
            )  # fmt: skip
            settle = max(0.0, settle)
            self._task = asyncio.create_task(self._drain(self.since, settle))
            self.bound = settle + runtime.config.drain_timeout
            return
        self.since = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if observe.not_ready_reason == REASON:
            observe.ready, observe.not_ready_reason = True, ""
        log_event(log, "node drain ended by the operator")

    async def refuse(self, connection: SessionConnection) -> None:
        """A session that came up while drained: GOAWAY now (no stream is open yet)."""
        await connection.goaway(ErrorCode.NO_ERROR, REASON)

    async def _drain(self, started: float, settle: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = started + settle + self.runtime.config.drain_timeout
        await asyncio.sleep(settle)
        told: set[SessionConnection] = set()
        logged_cut = False
        while self.active:
            past = loop.time() >= deadline
            for connection in list(self.runtime.accepted_connections()):
                if connection in told or connection.is_closed:
                    continue
                busy = live_streams(connection)
                if busy and not past:
                    continue
                told.add(connection)
                self.told += 1
                if busy:
                    self.cut += 1
                with contextlib.suppress(Exception):  # a session closing under us
                    await connection.goaway(ErrorCode.NO_ERROR, REASON)
            told = {c for c in told if not c.is_closed}
            if past and not logged_cut:
                logged_cut = True
                log_event(
                    log, "node drain timeout passed", sessions_told=self.told,
                    with_streams=self.cut,
                )  # fmt: skip
            await asyncio.sleep(POLL_INTERVAL)

    def status(self) -> dict[str, object]:
        """The ``drain`` line of ``accessfabric status``."""
        if not self.active or self.since is None:
            return {"draining": False}
        return {
            "draining": True,
            "for_s": round(asyncio.get_running_loop().time() - self.since, 1),
            "sessions_told": self.told,
            "told_with_streams": self.cut,
            "sessions_left": self.runtime.accepted_sessions,
            "bound_s": round(self.bound, 1),
        }

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
