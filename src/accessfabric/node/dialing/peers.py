"""``PeerSessionManager``: one fabric session per peer node id, reused, reopened on demand.

* :meth:`PeerSessionManager.session` returns the peer's session while it is
  usable (ready, not draining); otherwise it dials the peer's endpoints in
  order and keeps the first session that comes up — or, given an ``opener``
  (``RankedPeerDialer.open``), lets it pick the endpoint by ranking.
* Concurrent callers for the same peer share one dial: never two sessions.
* A session that ends (or starts draining) is evicted; the next call reopens.
* :meth:`PeerSessionManager.counters` is a snapshot of active / opens /
  reuses / evictions / closes / dial failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from accessfabric.errors import ErrorCode
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.observe.log_format import log_event
from accessfabric.session import SessionState
from accessfabric.timeouts import cancel_and_wait

log = logging.getLogger(__name__)

PeerDialer = Callable[[Endpoint, str], Awaitable[SessionConnection]]
"""Dial ``endpoint`` expecting node id ``str``; return a ready session or raise."""
PeerOpener = Callable[[str, Sequence[Endpoint]], Awaitable[tuple[SessionConnection, str]]]
"""Open a session to node id ``str`` over the best of its endpoints: (session, endpoint URL)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSessionCounters:
    active: int
    """Sessions in the table now (usable or not yet noticed closed)."""
    opens: int
    """Sessions dialled successfully."""
    reuses: int
    """Calls answered without a dial of their own (existing session or a dial in flight)."""
    evictions: int
    """Sessions removed because they ended or began draining."""
    closes: int
    """Sessions this manager closed on request (``close_peer``, ``aclose``)."""
    dial_failures: int
    """Dials in which no endpoint produced a session."""


class UnknownPeerError(LookupError):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"no static peer with node id {node_id}")
        self.node_id = node_id


class PeerUnreachableError(ConnectionError):
    """No endpoint of the peer produced a session; ``attempts`` holds each endpoint's error."""

    def __init__(self, node_id: str, attempts: Sequence[tuple[Endpoint, BaseException]]) -> None:
        detail = "; ".join(f"{endpoint}: {_describe(error)}" for endpoint, error in attempts)
        super().__init__(f"peer {node_id} unreachable: {detail or 'no endpoints'}")
        self.node_id = node_id
        self.attempts = tuple(attempts)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _usable(connection: SessionConnection) -> bool:
    return not connection.is_closed and connection.session.state is SessionState.READY


class PeerSessionManager:
    def __init__(
        self,
        dial: PeerDialer,
        peers: Iterable[tuple[str, Sequence[Endpoint]]] = (),
        *,
        opener: PeerOpener | None = None,
    ) -> None:
        self._dial = dial
        self._opener = opener
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._sessions: dict[str, SessionConnection] = {}
        self._dialing: dict[str, asyncio.Task[SessionConnection]] = {}
        self._live: set[SessionConnection] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._opens = self._reuses = self._evictions = self._closes = self._dial_failures = 0
        for node_id, endpoints in peers:
            self.set_peer(node_id, endpoints)

    # ------------------------------------------------------------ peer table

    def set_peer(self, node_id: str, endpoints: Sequence[Endpoint]) -> None:
        """Add a peer or replace its endpoints (an open session is kept)."""
        self._endpoints[node_id] = tuple(endpoints)

    @property
    def peer_ids(self) -> list[str]:
        return list(self._endpoints)

    def endpoints(self, node_id: str) -> tuple[Endpoint, ...]:
        """The endpoints this node dials ``node_id`` at (empty when unknown)."""
        return self._endpoints.get(node_id, ())

    def current(self, node_id: str) -> SessionConnection | None:
        """The peer's usable session, without dialling."""
        connection = self._sessions.get(node_id)
        return connection if connection is not None and _usable(connection) else None

    def dialing(self, node_id: str) -> bool:
        """A dial to ``node_id`` is under way (it goes on when a waiter gives up)."""
        return node_id in self._dialing

    # ------------------------------------------------------------ sessions

    async def session(self, node_id: str) -> SessionConnection:
        """The peer's session: reused while usable, otherwise dialled (one dial per peer)."""
        if self._closing:
            raise ConnectionError("peer session manager is closed")
        endpoints = self._endpoints.get(node_id)
        if endpoints is None:
            raise UnknownPeerError(node_id)
        existing = self._sessions.get(node_id)
        if existing is not None:
            if _usable(existing):
                self._reuses += 1
                return existing
            self._evict(node_id, existing)
        task = self._dialing.get(node_id)
        joined = task is not None
        if task is None:
            task = asyncio.create_task(self._open(node_id, endpoints))
            self._dialing[node_id] = task
            task.add_done_callback(lambda done: self._dial_done(node_id, done))
        connection = await asyncio.shield(task)
        if joined:
            self._reuses += 1
        return connection

    def _dial_done(self, node_id: str, task: asyncio.Task[SessionConnection]) -> None:
        if self._dialing.get(node_id) is task:
            del self._dialing[node_id]
        if not task.cancelled():
            task.exception()  # retrieved here, whether or not a caller still waits

    async def _open(self, node_id: str, endpoints: tuple[Endpoint, ...]) -> SessionConnection:
        if self._opener is not None:
            try:
                connection, url = await self._opener(node_id, endpoints)
            except Exception:
                self._dial_failures += 1
                raise
            return await self._adopt(node_id, connection, url)
        attempts: list[tuple[Endpoint, BaseException]] = []
        for endpoint in endpoints:
            try:
                connection = await self._dial(endpoint, node_id)
            except Exception as error:
                attempts.append((endpoint, error))
                log_event(
                    log, "peer dial failed", logging.WARNING,
                    peer=node_id, endpoint=endpoint.url, error=_describe(error),
                )  # fmt: skip
                continue
            return await self._adopt(node_id, connection, endpoint.url)
        self._dial_failures += 1
        raise PeerUnreachableError(node_id, attempts)

    async def _adopt(
        self, node_id: str, connection: SessionConnection, endpoint: str
    ) -> SessionConnection:
        if self._closing:
            await connection.goaway(ErrorCode.NO_ERROR, "node shutting down")
            raise ConnectionError("peer session manager is closed")
        self._opens += 1
        self._sessions[node_id] = connection
        self._live.add(connection)
        watcher = asyncio.create_task(self._watch(node_id, connection))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        log_event(
            log, "peer session opened", peer=node_id, endpoint=endpoint,
            carrier=connection.info.kind, fallback=connection.info.kind == "https_fallback",
        )  # fmt: skip
        return connection

    async def _watch(self, node_id: str, connection: SessionConnection) -> None:
        ended = await connection.wait_closed()
        self._live.discard(connection)
        if self._sessions.get(node_id) is connection:
            self._evict(node_id, connection)
            log_event(
                log, "peer session ended", peer=node_id,
                code=_code_name(ended.error_code), reason=ended.reason,
            )  # fmt: skip

    def _evict(self, node_id: str, connection: SessionConnection) -> None:
        if self._sessions.get(node_id) is connection:
            del self._sessions[node_id]
            self._evictions += 1

    async def close_peer(
        self, node_id: str, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = ""
    ) -> None:
        """GOAWAY the peer's session (its open streams finish first with ``NO_ERROR``)."""
        connection = self._sessions.pop(node_id, None)
        if connection is not None:
            self._closes += 1
            await connection.goaway(code, reason)

    async def aclose(self, *, drain_timeout: float = 10.0, reason: str = "shutting down") -> None:
        """GOAWAY every session, wait up to ``drain_timeout`` for them to end, abort the rest."""
        self._closing = True
        for task in list(self._dialing.values()):
            task.cancel()
        for node_id in list(self._sessions):
            await self.close_peer(node_id, ErrorCode.NO_ERROR, reason)
        for connection in list(self._live):
            await connection.goaway(ErrorCode.NO_ERROR, reason)
        live = [asyncio.ensure_future(c.wait_closed()) for c in self._live]
        if live:
            _, pending = await asyncio.wait(live, timeout=drain_timeout)
            for future in pending:
                future.cancel()
        for connection in list(self._live):
            if not connection.is_closed:
                connection.abort()
        await cancel_and_wait(self._watchers)

    def counters(self) -> PeerSessionCounters:
        return PeerSessionCounters(
            active=len(self._sessions),
            opens=self._opens,
            reuses=self._reuses,
            evictions=self._evictions,
            closes=self._closes,
            dial_failures=self._dial_failures,
        )


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)
