"""Route execution at the source: open streams on the best healthy route, fail over.

A :class:`RouteManager` reads, per (service, class), the primary and alternate routes
(:class:`~accessfabric.control.kernel.leased_route.LeasedRoute`) from the node's one
:class:`~accessfabric.control.kernel.route_book.RouteBook` — what its ``source`` (the
control link) last answered, or set statically (:meth:`RouteManager.set_routes`).
:meth:`RouteManager.open_stream` takes the best healthy route (primary first, then by
measured RTT) and returns a :class:`~accessfabric.node.streams.resumable.ResumableStream`;
a route whose first hop reports pressure (any level >= 50 on its session) comes after
the others for new streams.

A route fails when its first hop's session is lost (carrier loss, ping timeout), the
hop sends GOAWAY or reports pressure at or above ``pressure_threshold``, a ROUTE_UPDATE
fences its epoch, a relay resets the stream with ``ROUTE_REJECTED`` (lease refused or its
downstream died), or the stream stalls (unacknowledged bytes, no ACK progress for
``stall_timeout``; ``interactive_stall_timeout`` for an interactive stream whose route has
a healthy alternate).  Its active streams then resume on an alternate from their last
end-to-end ACK (``resume_stream``); the destination adopts them by resume token — a
sealed stream only with the resume proof this node adds to every attempt
(:mod:`accessfabric.sealing.resume_proof`).  Each stream moved is counted under the
reason its route was left, with the time until the far end acknowledged on the new
route (:mod:`accessfabric.node.routing.route_switches`).

Health comes from the data plane (first-hop RTT, stalls, failures);
:meth:`RouteManager.observations` is the report a heartbeat can carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.rejections import SignedObjectRejected
from accessfabric.control.kernel.route_book import RouteBook
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.routing.route_switches import (
    RouteFailure,
    RouteSwitches,
    SwitchReason,
    failure_reason,
    session_end_reason,
)
from accessfabric.node.serving.dataplane import DataPlane
from accessfabric.node.streams.connection import (
    SessionConnection,
    StreamResetError,
    termination_error,
)
from accessfabric.node.streams.resumable import (
    DEFAULT_RESUME_WINDOW,
    ResumableStream,
    StreamNotResumed,
    new_fabric_stream,
    session_stream,
)
from accessfabric.node.streams.sealed_stream import SealedStream
from accessfabric.node.streams.stream_sealing import SealingKeyUnknown, StreamSealing, relayed
from accessfabric.observe.log_format import log_event
from accessfabric.sealing import SealInitiator
from accessfabric.sealing.handshake import is_sealing_key_exchange
from accessfabric.sealing.resume_proof import prove_resume
from accessfabric.session import events as ev
from accessfabric.session.core import PRESSURE_HIGH
from accessfabric.session.session import RESUME_TOKEN_SIZE
from accessfabric.timeouts import wait_within
from accessfabric.wire.limits import MAX_KEY_EXCHANGE
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 0.1
FAST_STALL_CLASSES = frozenset({TrafficClass.INTERACTIVE})
"""Classes whose stalls use ``interactive_stall_timeout`` when an alternate exists."""


class RouteUnusable(ConnectionError):
    """One route could not carry a new stream (sealing key unknown, first hop failed...)."""


class NoUsableRoute(ConnectionError):
    """No route lease lets this node open the stream now; the message says why."""


@dataclass(slots=True)
class RouteHealth:
    srtt: float | None = None
    failures: int = 0
    stalls: int = 0
    down_until: float = 0.0
    last_failure: str = ""
    last_switch: str = ""  # why streams last left this route (a SwitchReason)
    last_recovery: float | None = None  # and how long until they were acknowledged again

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


RouteSource = Callable[[str, TrafficClass], Awaitable[list[LeasedRoute]]]


@dataclass(eq=False)
class _Routed:
    stream: ResumableStream
    route: LeasedRoute
    key: tuple[str, TrafficClass]
    progress_at: float
    last_acked: int
    failing: asyncio.Task[None] | None = None
    reason: SwitchReason = SwitchReason.OTHER  # why the route was left (while failing)
    recovering: tuple[LeasedRoute, float] | None = None  # (route left, failure noticed): no ACK yet


def _identity(route: LeasedRoute) -> tuple[int, int, tuple[str, ...]]:
    return (route.route_id, route.lease.epoch, route.lease.hops)


class RouteManager:
    def __init__(
        self,
        node_id: str,
        peers: PeerSessionManager,
        data_plane: DataPlane,
        *,
        source: RouteSource | None = None,
        authority_key: bytes | None = None,
        resume_window: float = DEFAULT_RESUME_WINDOW,
        stall_timeout: float = 3.0,
        interactive_stall_timeout: float = 1.0,
        pressure_threshold: int = 90,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.time,
        book: RouteBook | None = None,
    ) -> None:
        self.node_id = canonical_node_id(node_id)
        self.peers = peers
        self.source = source
        self.authority_key = authority_key
        self.resume_window = resume_window
        self.stall_timeout = stall_timeout
        self.interactive_stall_timeout = interactive_stall_timeout
        self.pressure_threshold = pressure_threshold
        self.cooldown = cooldown
        self.clock = clock
        self.book = book if book is not None else RouteBook()
        """The node's one book of verified route leases (shared with the control client;
        its fences with the lease check)."""
        self.fences = self.book.fences
        self.health: dict[int, RouteHealth] = {}
        self._streams: dict[tuple[SessionConnection, int], _Routed] = {}
        self._watched: set[SessionConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self.switches = RouteSwitches()
        self.failed = 0
        self.sealing: StreamSealing | None = None
        """Seals the streams :meth:`open_stream` opens (docs/sealing.md); None: never."""
        data_plane.hooks.append(self._on_event)

    @property
    def failovers(self) -> int:
        """Streams moved to an alternate route, whatever the reason."""
        return self.switches.total

    # ------------------------------------------------------------ route table

    def set_routes(
        self, service: str, traffic_class: TrafficClass, routes: list[LeasedRoute]
    ) -> None:
        """Static routes (primary first), e.g. from cached leases or tests."""
        self.book.put(service, traffic_class, routes)

    def fenced(self, lease: RouteLease) -> bool:
        """True when a newer epoch of this lease's route was seen (e.g. in a ROUTE_UPDATE)."""
        return self.fences.fenced(lease)

    def _health(self, route: LeasedRoute) -> RouteHealth:
        health = self.health.get(route.route_id)
        if health is None:
            health = self.health[route.route_id] = RouteHealth()
        return health

    async def routes(self, service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
        """Usable routes now, best first; :class:`NoUsableRoute` says why there is none."""
        if self.source is not None:
            try:
                candidates = await self.source(service, traffic_class)
            except Exception as error:
                raise NoUsableRoute(str(error)) from None
            if candidates:  # the book alternates and observations are taken from
                self.book.put(service, traffic_class, candidates)
        else:
            candidates = self.book.held(service, traffic_class) or []
        now = self.clock()
        usable = [r for r in candidates if not r.expired(now) and not self.fences.fenced(r.lease)]
        if not usable:
            raise NoUsableRoute(self._why_none(service, traffic_class, candidates, now))
        mono = time.monotonic()
        order = {id(r): i for i, r in enumerate(usable)}
        usable.sort(
            key=lambda r: (
                not self._health(r).healthy(mono),
                self._first_hop_pressured(r),
                order[id(r)],
                self._health(r).srtt or 0.0,
            )
        )
        return usable

    def _first_hop_pressured(self, route: LeasedRoute) -> bool:
        """The route's first hop last reported a level >= ``PRESSURE_HIGH`` (50) on its live
        session: new streams prefer a route whose first hop did not (below the failover
        threshold the streams already on it stay)."""
        connection = self.peers.current(route.first_hop)
        levels = None if connection is None else connection.session.peer_pressure
        return levels is not None and max(levels) >= PRESSURE_HIGH

    def _why_none(
        self, service: str, traffic_class: TrafficClass, candidates: list[LeasedRoute], now: float
    ) -> str:
        name = f"service {service!r} ({traffic_class.name.lower()})"
        if not candidates:
            return f"no route lease for {name}: none was issued or cached"
        latest = max(r.lease.expires_ms for r in candidates) / 1000
        if latest <= now:
            return (
                f"no usable route lease for {name}: all {len(candidates)} route leases "
                f"expired (the last {now - latest:.0f} s ago) and no fresh lease arrived"
            )
        return f"no usable route lease for {name}: every route's epoch is fenced"

    # ------------------------------------------------------------ opening

    async def open_stream(
        self,
        service: str,
        traffic_class: TrafficClass = TrafficClass.RELIABLE,
        *,
        key_exchange: bytes = b"",
        resume_token: bytes = b"",
        resume_key: bytes = b"",
    ) -> ResumableStream | SealedStream:
        """A stream to ``service`` on the best healthy route (the next one if a hop fails;
        when every route failed, the ``source`` is asked once more and the routes it
        answers that were not tried yet are: a device whose entry just died gets routes
        around it, after at most the source's re-home wait, ``LOST_LEASE_WAIT``).

        Without ``key_exchange`` the node seals the stream itself per its sealing policy
        (``self.sealing``, :mod:`accessfabric.node.streams.stream_sealing`): the caller reads and
        writes plaintext on the :class:`SealedStream` it gets; a relayed route whose
        destination's sealing key is unknown is skipped (:class:`SealingKeyUnknown` in
        the error when no route is left).

        With ``key_exchange`` (from a :class:`~accessfabric.sealing.SealInitiator`) the
        caller seals: it gets the raw :class:`ResumableStream` and needs ``resume_key`` —
        the initiator's ``resume_key`` — to prove its resumes (the destination refuses a
        resume without a proof).  ``resume_token`` (random when empty) names the
        end-to-end stream; sealing binds its keys to it (docs/sealing.md).
        """
        if is_sealing_key_exchange(key_exchange) and not resume_key:
            raise ValueError(
                "a sealed stream needs its resume key to fail over: "
                "pass resume_key=initiator.resume_key"
            )
        errors: list[str] = []
        tried: set[tuple[int, int, tuple[str, ...]]] = set()
        routes = await self.routes(service, traffic_class)
        for attempt in range(2):
            for route in routes:
                tried.add(_identity(route))
                try:
                    return await self.open_on_route(
                        route, service, traffic_class, key_exchange=key_exchange,
                        resume_token=resume_token, resume_key=resume_key,
                    )  # fmt: skip
                except RouteUnusable as error:
                    errors.append(f"route {route.route_id}: {error}")
            if attempt or self.source is None:
                break
            # Every route failed: ask the source once more.  A first hop that just died
            # (its entry SIGKILLed) is known lost by now, and the source answers routes
            # around it (waiting for the device's re-home, ControlLink.route_source); a
            # source with nothing new answers the same routes, tried already (issue 17).
            try:
                again = await self.routes(service, traffic_class)
                routes = [r for r in again if _identity(r) not in tried]
            except NoUsableRoute as error:
                errors.append(f"then: {error}")
                break
        raise NoUsableRoute(f"every route to {service!r} failed: {'; '.join(errors)}")

    async def open_on_route(
        self,
        route: LeasedRoute,
        service: str,
        traffic_class: TrafficClass,
        *,
        key_exchange: bytes = b"",
        resume_token: bytes = b"",
        resume_key: bytes = b"",
    ) -> ResumableStream | SealedStream:
        """A stream on exactly ``route`` (:meth:`open_stream` tries each route with it;
        ``diag route`` probes each); :class:`RouteUnusable` says why not."""
        token = resume_token or secrets.token_bytes(RESUME_TOKEN_SIZE)
        initiator: SealInitiator | None = None
        if not key_exchange and self.sealing is not None:
            try:
                initiator = await self.sealing.initiator(route.lease, service, token)
            except SealingKeyUnknown as error:
                raise RouteUnusable(str(error)) from None
        elif not key_exchange and relayed(route.lease):
            raise RouteUnusable("relayed, and this node cannot seal")
        try:
            stream = await self._open_on(
                route, service, traffic_class,
                key_exchange=initiator.key_exchange if initiator else key_exchange,
                resume_token=token,
                resume_key=initiator.resume_key if initiator else resume_key,
            )  # fmt: skip
        except Exception as error:
            self._route_failed(route, f"open: {error}")
            raise RouteUnusable(str(error)) from error
        return stream if initiator is None else SealedStream.opener(stream, initiator)

    async def _open_on(
        self,
        route: LeasedRoute,
        service: str,
        traffic_class: TrafficClass,
        *,
        key_exchange: bytes,
        resume_token: bytes,
        resume_key: bytes,
    ) -> ResumableStream:
        connection = await self.peers.session(route.first_hop)
        inner = await connection.open_stream(
            service,
            traffic_class,
            route.route_id,
            key_exchange=key_exchange,
            route_lease=route.blob,
            resume_token=resume_token,
        )
        # the tenant's streams share one turn on this session (docs/relays.md, fairness)
        connection.session.set_stream_group(inner.stream_id, route.lease.tenant)
        state = session_stream(connection, inner.stream_id)
        stream = ResumableStream(
            inner,
            state,
            state.resume_token,
            resume_window=self.resume_window,
            resumable_reset=_route_reset,
            on_broken=self._broken,
        )
        stream.resume_key = resume_key
        stream.key_exchange = key_exchange  # resent after a resume proof from offset 0
        self._track(stream, route, (service, traffic_class), connection)
        return stream

    def _track(
        self,
        stream: ResumableStream,
        route: LeasedRoute,
        key: tuple[str, TrafficClass],
        connection: SessionConnection,
    ) -> None:
        self._streams[(connection, stream.stream_id)] = _Routed(
            stream, route, key, time.monotonic(), stream.acked
        )
        if connection not in self._watched:
            self._watched.add(connection)
            self._spawn(self._watch(connection))
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._monitor_loop())

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ failure triggers

    async def _watch(self, connection: SessionConnection) -> None:
        ended = await connection.wait_closed()
        self._watched.discard(connection)
        error = RouteFailure(session_end_reason(ended), str(termination_error(ended)))
        for (conn, _), routed in list(self._streams.items()):
            if conn is connection:
                routed.stream.mark_broken(error)

    def _on_conn(self, connection: SessionConnection) -> list[_Routed]:
        return [r for (c, _), r in self._streams.items() if c is connection]

    def _on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.StreamReset:
            assert isinstance(event, ev.StreamReset)
            routed = self._streams.get((connection, event.stream_id))
            if routed is not None:
                error = StreamResetError(event.stream_id, event.error_code, event.remote)
                routed.stream.mark_broken(error)
        elif kind is ev.GoawayReceived:
            assert isinstance(event, ev.GoawayReceived)
            for routed in self._on_conn(connection):
                routed.stream.mark_broken(
                    RouteFailure(SwitchReason.GOAWAY, f"first hop GOAWAY: {event.reason}")
                )
        elif kind is ev.PeerPressure:
            assert isinstance(event, ev.PeerPressure)
            # cpu is left out: a relay busy relaying reports cpu 100 %, and failing every
            # route through it would move all its streams for doing its job (the weight
            # back-off and the choice of first hop for new streams answer cpu instead)
            level = max(event.queue, event.memory, event.network)
            if level >= self.pressure_threshold:
                for routed in self._on_conn(connection):
                    routed.stream.mark_broken(
                        RouteFailure(SwitchReason.PRESSURE, f"first hop pressure {level} %")
                    )
        elif kind is ev.RouteUpdated:
            assert isinstance(event, ev.RouteUpdated)
            self._route_update(event.lease)

    def _route_update(self, blob: bytes) -> None:
        """A newer epoch of a route fences the streams on older ones."""
        if self.authority_key is None:
            return
        try:
            lease = verify_route_lease(blob, self.authority_key, self.clock(), hop=self.node_id)
            # the node's one book: fences the older epoch and puts the new lease in its
            # place for every reader (route execution, the control client)
            self.book.update(lease, blob)
        except SignedObjectRejected as rejected:
            log_event(log, "route update refused", logging.WARNING, reason=str(rejected))
            return
        # The control client may have admitted this epoch already (a fresh lease fetch):
        # what matters here is which streams still run on an older one.
        for routed in list(self._streams.values()):
            if routed.route.route_id == lease.route_id and routed.route.lease.epoch < lease.epoch:
                routed.stream.mark_broken(
                    RouteFailure(
                        SwitchReason.FENCED,
                        f"route {lease.route_id} fenced by epoch {lease.epoch}",
                    )
                )

    async def _monitor_loop(self) -> None:
        """Stalls (unacknowledged bytes, no ACK progress) and first-hop RTT."""
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            now = time.monotonic()
            for (conn, _), routed in list(self._streams.items()):
                stream = routed.stream
                if routed.recovering is not None:
                    self._check_recovered(routed, routed.recovering)
                if stream.finished or stream.done:
                    self._untrack(routed)
                    continue
                health = self._health(routed.route)
                srtt = conn.session.rtt.srtt
                if srtt:
                    health.srtt = srtt
                if stream.broken:
                    continue
                if stream.acked != routed.last_acked or not stream.unacked:
                    routed.last_acked = stream.acked
                    routed.progress_at = now
                elif now - routed.progress_at > (limit := self._stall_limit(routed, srtt)):
                    health.stalls += 1
                    stream.mark_broken(
                        RouteFailure(SwitchReason.STALLED, f"stalled: no ACK for {limit:.3g} s")
                    )

    def _stall_limit(self, routed: _Routed, srtt: float | None) -> float:
        """How long a stream may go without ACK progress: ``stall_timeout``, or for an
        interactive stream whose route has a healthy alternate the shorter
        ``interactive_stall_timeout`` (at least 4 x the first hop's smoothed RTT): a dead
        path is left sooner where leaving it helps (docs/config.md ``[routes]``)."""
        if routed.key[1] not in FAST_STALL_CLASSES:
            return self.stall_timeout
        if self.interactive_stall_timeout >= self.stall_timeout:
            return self.stall_timeout
        now = time.monotonic()
        wall = self.clock()
        alternate = any(
            r.route_id != routed.route.route_id
            and not r.expired(wall)
            and self._health(r).healthy(now)
            for r in self.book.held(*routed.key) or ()
        )
        if not alternate:
            return self.stall_timeout
        return min(self.stall_timeout, max(self.interactive_stall_timeout, 4 * (srtt or 0.0)))

    def _untrack(self, routed: _Routed) -> None:
        for key, value in list(self._streams.items()):
            if value is routed:
                del self._streams[key]

    # ------------------------------------------------------------ failover

    def _route_failed(self, route: LeasedRoute, reason: str) -> None:
        health = self._health(route)
        health.failures += 1
        health.last_failure = reason
        health.down_until = time.monotonic() + self.cooldown

    def _broken(self, stream: ResumableStream, error: BaseException) -> None:
        routed = next((r for r in self._streams.values() if r.stream is stream), None)
        if routed is None or (routed.failing is not None and not routed.failing.done()):
            return
        self._route_failed(routed.route, str(error) or type(error).__name__)
        routed.reason = failure_reason(error, stream.connection.ended)
        routed.recovering = None
        routed.failing = self._spawn(self._failover(routed, error))

    async def _failover(self, routed: _Routed, error: BaseException) -> None:
        stream = routed.stream
        old = stream.inner
        old_conn = old.connection
        if not old_conn.is_closed:  # the old path may live: tell it the stream left it
            with contextlib.suppress(LocalProtocolError):
                old_conn.session.reset_stream(old.stream_id, ErrorCode.ROUTE_REJECTED)
                old_conn.schedule_flush()
        started = stream.broken_since or time.monotonic()
        log_event(
            log, "route failed", logging.WARNING, route=routed.route.route_id,
            service=stream.service, error=str(error) or type(error).__name__,
        )  # fmt: skip
        delay = 0.05
        while not stream.finished and time.monotonic() < started + self.resume_window:
            try:
                routes = await self.routes(*routed.key)
            except NoUsableRoute as why:
                log_event(log, "no route to resume on", logging.WARNING, reason=str(why))
                routes = []
            if not stream.resume_key:  # unsealed: never through a relay (docs/sealing.md)
                routes = [r for r in routes if not relayed(r.lease)]
            for route in self._resume_order(routes, routed.route):
                if await self._resume_on(routed, route, started):
                    return
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        self.failed += 1
        stream.fail(StreamNotResumed(f"no route to resume on within {self.resume_window:g} s"))
        self._untrack(routed)

    def _resume_order(self, routes: list[LeasedRoute], left: LeasedRoute) -> list[LeasedRoute]:
        """The routes a failing stream tries, in order: the healthy ones (best first) —
        and when every route is cooling down, all of them, the route just left last and
        the others by when their cooldown ends.  A cooldown ranks a route below healthy
        ones; it must not keep a stream from a route that works again while nothing else
        does (issue 13: a second failover waited out the first route's cooldown)."""
        now = time.monotonic()
        healthy = [r for r in routes if self._health(r).healthy(now)]
        if healthy:
            return healthy
        return sorted(
            routes, key=lambda r: (r.route_id == left.route_id, self._health(r).down_until)
        )

    async def _resume_on(self, routed: _Routed, route: LeasedRoute, started: float) -> bool:
        stream = routed.stream
        try:
            connection = await wait_within(self.peers.session(route.first_hop), 5.0)
            snapshot = stream.snapshot()
            stream_id = connection.session.resume_stream(
                snapshot,
                route.route_id,
                route_lease=route.blob,
                key_exchange=_resume_proof(stream, route, snapshot.recv_offset),
            )
            connection.session.set_stream_group(stream_id, route.lease.tenant)
        except Exception as error:
            self._route_failed(route, f"resume: {error}")
            return False
        inner = new_fabric_stream(connection, stream_id, stream.service, stream.traffic_class)
        self._untrack(routed)
        stream.rebind(inner, session_stream(connection, stream_id))
        left = routed.route
        routed.route = route
        routed.progress_at = time.monotonic()
        routed.last_acked = stream.acked
        routed.recovering = (left, started)
        self._track_existing(routed, connection)
        self.switches.switched(routed.reason)
        health = self._health(left)
        health.last_switch, health.last_recovery = routed.reason.value, None
        log_event(
            log, "stream resumed on alternate route", route=route.route_id,
            first_hop=route.first_hop, offset=snapshot.send_acked, reason=routed.reason.value,
            seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip
        return True

    def _check_recovered(self, routed: _Routed, recovering: tuple[LeasedRoute, float]) -> None:
        """The first ACK on the new route ends the recovery that began at the failure."""
        acked_at = routed.stream.ack_seen_at
        if acked_at is None:
            return
        left, started = recovering
        routed.recovering = None
        took = max(0.0, acked_at - started)
        self.switches.recovered(routed.reason, took)
        health = self._health(left)
        if health.last_switch == routed.reason.value:
            health.last_recovery = took

    def _track_existing(self, routed: _Routed, connection: SessionConnection) -> None:
        self._streams[(connection, routed.stream.stream_id)] = routed
        if connection not in self._watched:
            self._watched.add(connection)
            self._spawn(self._watch(connection))

    # ------------------------------------------------------------ reporting

    def route_of(self, connection: SessionConnection, stream_id: int) -> int | None:
        """The route id a stream this node opened runs on now (None: not a routed stream)."""
        routed = self._streams.get((connection, stream_id))
        return None if routed is None else routed.route.route_id

    def observations(self) -> list[dict[str, object]]:
        """Per-route data-plane health, for the control plane (heartbeat facts)."""
        now = time.monotonic()
        out: list[dict[str, object]] = []
        for (service, traffic_class), routes in self.book.items():
            for route in routes:
                health = self._health(route)
                out.append(
                    {
                        "route_id": route.route_id,
                        "service": service,
                        "traffic_class": traffic_class.name.lower(),
                        "rank": route.rank,
                        "epoch": route.lease.epoch,
                        "first_hop": route.first_hop,
                        "hops": list(route.lease.hops),
                        "healthy": health.healthy(now),
                        "srtt_ms": None if health.srtt is None else round(health.srtt * 1e3, 2),
                        "stalls": health.stalls,
                        "failures": health.failures,
                        "last_failure": health.last_failure,
                        "last_switch": health.last_switch,
                        "recovery_ms": None
                        if health.last_recovery is None
                        else round(health.last_recovery * 1e3, 1),
                    }
                )
        return out

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for task in list(self._tasks):
            task.cancel()


def _resume_proof(stream: ResumableStream, route: LeasedRoute, start_offset: int) -> bytes:
    """A sealed stream's proof for this attempt (a fresh counter each time); b"" unsealed."""
    if not stream.resume_key:
        return b""
    stream.resume_counter += 1
    proof = prove_resume(
        stream.resume_key, stream.resume_counter, token=stream.resume_token,
        service=stream.service, route_id=route.route_id, route_lease=route.blob,
        start_offset=start_offset,
    )  # fmt: skip
    if start_offset == 0 and len(proof) + len(stream.key_exchange) <= MAX_KEY_EXCHANGE:
        # nothing came back yet: the destination may never have seen the stream
        # (sealing/resume_proof.py); the original exchange lets it serve the stream anew
        proof += stream.key_exchange
    return proof


def _route_reset(error: StreamResetError) -> bool:
    """A relay's ``ROUTE_REJECTED`` means "this path", not "this stream": resume elsewhere."""
    return error.remote and error.code == ErrorCode.ROUTE_REJECTED
