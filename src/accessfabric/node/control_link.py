"""The node's link to the control plane (``[control]``): the glue around ``ControlClient``.

A :class:`ControlLink` is a node component.  When started it

* enrolls with ``[control] token`` unless a node record is cached in ``state_dir``;
* heartbeats every interval (the control plane's policy, or ``heartbeat_interval``)
  with the node's facts: listeners as endpoint candidates and transports, the services
  this process serves (:meth:`ControlLink.served`),
  relay opt-in for the ``relay`` role, measured peers (session RTTs and the first hops
  of leased routes, from ``routes.observations()``) and the ranker's bounded endpoint
  health report; failures back off exponentially with jitter;
* registers a replica of every service this process serves — whatever has a handler in
  the dispatcher: ``[[services]]``, the VPN exit's ``vpn`` — and nothing else, and keeps
  their service leases cached (the heartbeats renew the replicas);
* answers route execution's questions for route leases (the runtime plugs
  :meth:`ControlLink.route_source` in as ``RouteManager.source``) from the
  cached leases while they are valid (renewed a third before expiry for the services of
  ``[[forwards]]`` and any service a stream was opened to), and fetches when none is
  cached; with the control plane unreachable the cached leases keep working until they
  expire, and the error says why none is left;
* turns directory entries into dialable peers of the ``PeerSessionManager`` (static
  ``[[peers]]`` keep their configured endpoints), probing a few so their RTT reaches
  the control plane's route planner — never one that holds a session with this node
  already, and a failing one after exponential backoff with jitter (at most a minute).

:meth:`ControlLink.status` is the ``control`` section of ``accessfabric status``;
:meth:`ControlLink.lease_rows` fills its ``leases`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from accessfabric.control.client.client import (
    BACKOFF_BASE,
    ControlClient,
    ControlRefused,
    ControlUnavailable,
    NoUsableLease,
    backoff_delay,
)
from accessfabric.control.client.facts import (
    CLASS_NAMES,
    MAX_ENDPOINT_HEALTH,
    MAX_ENDPOINTS,
    MAX_PEERS,
    MAX_ROUTE_REPORTS,
    MAX_SERVICES,
    MAX_STREAM_REPORTS,
    ClassBytes,
    EndpointHealth,
    HeartbeatFacts,
    PeerMeasurement,
    RelayUsage,
    RouteReport,
    ServiceCapacity,
    StreamReport,
)
from accessfabric.control.client.heartbeat_policy import HeartbeatMismatch, heartbeat_mismatch
from accessfabric.control.client.replica_set import replica_summary
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.rejections import SignedObjectRejected
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.errors import ErrorCode
from accessfabric.node.admin.diagnostics import NodeDiagnostics
from accessfabric.node.admin.observer import Observer
from accessfabric.node.config.node_config import ControlSettings, default_class
from accessfabric.node.dialing.address import Endpoint, parse_endpoint_url
from accessfabric.node.routing.route_test_runner import RouteTestRunner
from accessfabric.node.routing.routes import NoUsableRoute
from accessfabric.node.routing.service_failovers import ServiceFailovers
from accessfabric.node.serving.tenant_admission import retry_hint
from accessfabric.observe.log_format import log_event
from accessfabric.session import SessionState
from accessfabric.session.events import GoawayReceived
from accessfabric.timeouts import cancel_and_wait
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.node.parts import NodeParts
    from accessfabric.node.streams.connection import SessionConnection

log = logging.getLogger(__name__)

TRANSPORT_OF = {
    "tcp": "tcp_tls",
    "websocket": "websocket",
    "quic": "quic",
    "https": "https_fallback",
}
MAX_PROBES = 8
"""Directory peers dialled at most at once to measure their RTT."""
PROBE_BACKOFF_BASE = 1.0
PROBE_BACKOFF_MAX = 60.0
"""A directory peer whose probes fail is probed again after exponential backoff with
jitter (:func:`backoff_delay`), at most this many seconds apart."""
REHOME_SPREAD = 2.0
"""Seconds over which a device whose placed entry failed spreads its next attempt."""
REHOME_RETRY_CAP = 2.0
REHOME_FAST_RETRIES = 6
"""A re-home dial that failed is retried with its back-off capped at
:data:`REHOME_RETRY_CAP` seconds (plus the spread) for this many failures in a row, then
as any probe (up to :data:`PROBE_BACKOFF_MAX`).  A crowd re-homing onto an entry whose
handshake budget refuses part of it is refused at accept, before TLS (cheap for the
entry): the budget still paces the handshakes, and a refused device is back within a
few seconds of the budget having room instead of after 8-16 s of doubled back-off
(~490 devices of a killed entry took 18 s at 1000 devices; ADR 0043)."""
MAX_TELEMETRY_EVERY = 1000
"""The largest ``telemetry_every`` a node takes from a heartbeat reply."""
LOST_ENTRY_AVOID = 10.0
"""Seconds a device whose entry session ended tries its alternates before that entry
again: a dead entry stays in directories until the control plane counts it unreachable
(4.5 heartbeat intervals), and dialling it first cost its devices a failed dial each."""
UNMEASURED_RTT = 0.05
"""Seconds reported for a ready session whose RTT probe has not come back yet."""
PLANNER_SNAPSHOT_AGE = 1.1
"""Seconds after a heartbeat until the control plane's planner has surely taken it in
(it rebuilds its snapshot for heartbeats at most every ``snapshot_max_age``, 1 s)."""
LOST_LEASE_WAIT = 15.0
"""Seconds a stream waits for the heartbeat that reports its device's new entry when
the control plane still plans through the lost one: as long as issue 17 gives a dead
entry's devices to be back on another (1000 devices placed: 8-10.5 s after the SIGKILL).
A stream opened while its device re-homes therefore opens within this, plus
:data:`PLANNER_SNAPSHOT_AGE` and one lease request, once the device is on another entry,
or fails saying it is still re-homing (5 s until issue 17's second evening: a stream
that waited for a re-home of more than 5 s failed)."""
SOFTWARE = "accessfabric-node"
ROUTE_ERROR_LOG_INTERVAL = 10.0
"""Seconds between two ``no route lease`` log lines for one (service, class)."""
FAILING_LOG_INTERVAL = 30.0
"""Seconds between two ``control plane link failing`` lines of one outage."""
DRAIN_SETTLE_INTERVALS = 1.5
DRAIN_SETTLE_EXTRA = 1.0
"""A drained node tells its idle sessions GOAWAY after 1.5 heartbeat intervals + 1 s: by
then its devices learnt the drain from their own (jittered) heartbeats, dialled their new
entry, reported it and hold route leases around the drained node."""
DRAINED_REFETCH_INTERVAL = 1.0
"""Seconds between two lease requests for a service whose leases all pass a drained node."""


class ControlLink:
    """Runs a :class:`ControlClient` for a node (see the module doc); the runtime plugs
    :meth:`route_source`, :meth:`wake` and :meth:`own_record` into its parts."""

    def __init__(
        self,
        runtime: NodeParts,
        settings: ControlSettings,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.client = ControlClient(
            settings.urls or settings.url,
            runtime.key,
            settings.authority_key,
            str(settings.state_dir),
            clock=clock,
            routes=runtime.route_book,
        )
        self._clock = clock
        self._rng = rng or random.Random()
        self.route_tests = RouteTestRunner(runtime, self.client)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._registered: set[str] = set()
        self._directory_peers: set[str] = set()
        self._drained_peers: set[str] = set()
        """Directory peers the operator drains: route leases through them are replaced."""
        self._drained_refetch: dict[tuple[str, TrafficClass], float] = {}
        self._placement: list[str] = []
        self._telemetry_every = 1
        """Detailed telemetry with one heartbeat in this many (the control plane says)."""
        self.observer = Observer()
        """The ``observer`` role's aggregate (node/admin/observer.py): fed each cycle while
        this node's record holds the role."""
        self._beats = 0
        self._home: str | None = None
        """The placed entry this device last held (or dialled) its session with."""
        self._watcher: asyncio.Task[None] | None = None
        self._watched: SessionConnection | None = None
        self._lost: dict[str, float] = {}
        """Entry -> until when: its placed session ended, its alternates go first."""
        self._ended: dict[str, float] = {}
        """Entry -> when its placed session last ended: a cached lease through it issued
        before then is no route while no session with it is held (after ``_lost`` too)."""
        """The directory's session placement (``mobile`` scope): entries, primary first."""
        self._probe_failures: dict[str, tuple[int, float]] = {}
        """Directory peer -> (failed probes in a row, when the next may start)."""
        self.health: str | None = None
        self.reasons: list[str] = []
        self.last_heartbeat_at: float | None = None
        self.last_error: str | None = None
        self.enrollment_refused: str | None = None
        """Why the control plane refused our enrollment token (None: not refused)."""
        self.last_error_at: float | None = None
        self.failures = 0
        self._failing_logged_at: float | None = None
        """When this outage's last ``control plane link failing`` line was written."""
        self._failing_since: float | None = None
        config = runtime.config
        named = [s.name for s in config.services] + [f.service for f in config.forwards]
        self.failovers = ServiceFailovers(named)
        runtime.observe.registry.register(self.failovers)
        self._wake = asyncio.Event()
        self._report = asyncio.Event()
        """Heartbeat now, also when set while a cycle runs (its facts may predate the
        news): :meth:`_reported`."""
        self._heard = asyncio.Event()
        """Set (and replaced) after every heartbeat the control plane answered."""
        self.interval_mismatch: HeartbeatMismatch | None = None
        """``[control] heartbeat_interval`` against the cached policy (None: it fits)."""
        self._facts_taken = 0
        self._facts_answered = 0
        """Heartbeats whose facts were taken, and the last of them answered."""
        self._unreachable = False
        """The last cycle failed because the control plane could not be reached."""
        self.route_errors: dict[tuple[str, TrafficClass], tuple[str, float]] = {}
        """(service, class) -> why the last attempt to get a route lease failed, and when."""
        self._route_error_logged: dict[tuple[str, TrafficClass], float] = {}
        self._own_record: bytes | None = None
        self.route_cache_version = 0
        """Bumped whenever the route leases of a (service, class) change (heartbeat fact)."""
        self._published: dict[tuple[str, TrafficClass], tuple[int, ...]] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the heartbeat loop (never blocks start-up)."""
        for forward in self.runtime.config.forwards:
            traffic_class = forward.traffic_class or default_class(forward.service)
            self.client.wanted.add((forward.service, traffic_class))
        self._own_record = self.client.record_blob()
        self._apply_access_policy()  # the cached grants hold until they expire
        self._apply_directory(self.client.cached_directory())
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Heartbeat now (e.g. the mobile relay state changed), not at the next interval."""
        self._wake.set()

    def own_record(self) -> bytes | None:
        """This node's signed record as last enrolled (sent in HELLO), None before."""
        return self._own_record

    async def close(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._task, self._watcher, *self._probes.values()) if t is not None]
        await cancel_and_wait(tasks)
        await self.route_tests.close()
        await self.client.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.cycle()
                if self.failures:
                    down = self._clock() - (self._failing_since or self._clock())
                    log_event(
                        log, "control plane reachable again", failures=self.failures,
                        down_s=round(down, 1),
                    )  # fmt: skip
                self.failures = 0
                self._failing_logged_at = self._failing_since = None
                self._unreachable = False
                self.client.next_attempt_at = None
                interval = self.settings.heartbeat_interval or self.client.heartbeat_interval()
                delay = interval * self._rng.uniform(0.9, 1.1)
            except (ControlUnavailable, ControlRefused, NotEnrolledYet) as error:
                self.failures += 1
                self._unreachable = isinstance(error, ControlUnavailable)
                self.last_error, self.last_error_at = str(error), self._clock()
                cap = self.settings.backoff_max
                base = min(BACKOFF_BASE, cap)
                delay = backoff_delay(self.failures, self._rng, base=base, cap=cap)
                self.client.next_attempt_at = self._clock() + delay
                self._log_failing(error, delay)
            except Exception as error:  # a bug must not end the loop silently
                self.failures += 1
                self.last_error, self.last_error_at = repr(error), self._clock()
                log.exception("control link cycle failed")
                delay = self.settings.backoff_max
            await self._sleep(delay)

    def _log_failing(self, error: Exception, delay: float) -> None:
        """The first failure of an outage, then at most every ``FAILING_LOG_INTERVAL``."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        logged = self._failing_logged_at
        if logged is not None and now - logged < FAILING_LOG_INTERVAL:
            return
        self._failing_logged_at = now
        log_event(
            log, "control plane link failing", logging.WARNING,
            error=str(error), retry_in=round(delay, 1), failures=self.failures,
            failing_for_s=round(now - self._failing_since, 1),
            status=self.client.status().describe(),
        )  # fmt: skip

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less when closing or :meth:`_wake` is set."""
        self._wake.clear()
        if self._report.is_set():  # asked for during the cycle that just ended
            self._report.clear()
            return
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._wake, self._report)]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self._report.clear()

    # ------------------------------------------------------------ one cycle

    async def cycle(self) -> None:
        """Enroll if needed, heartbeat, register services, directory, renew route leases."""
        client = self.client
        if client.record() is None:
            if not self.settings.token:
                raise NotEnrolledYet(
                    f"{self.runtime.node_id} has no node record in {self.settings.state_dir} "
                    "and [control] token is not set"
                )
            try:
                record = await client.enroll(self.settings.token)
            except ControlRefused as refused:  # a bad, used or expired token: say so
                if self.enrollment_refused != str(refused):
                    log_event(
                        log, "enrollment refused", logging.ERROR, error=str(refused),
                        fix="create a new token (accessfabric control token create) "
                        "and set [control] token",
                    )  # fmt: skip
                self.enrollment_refused = str(refused)
                raise
            self.enrollment_refused = None
            log_event(
                log, "enrolled with the control plane", tenant=record.tenant,
                roles=",".join(sorted(r.value for r in record.roles)),
            )  # fmt: skip
        detail = self._beats % self._telemetry_every == 0  # sampled (control/server/telemetry.py)
        self._beats += 1
        self._facts_taken += 1
        taken = self._facts_taken
        reply = await client.heartbeat(self.facts(detail=detail))
        self.last_heartbeat_at = self._clock()
        self._facts_answered = max(self._facts_answered, taken)
        self._check_interval()
        heard, self._heard = self._heard, asyncio.Event()
        heard.set()
        every = reply.get("telemetry_every")
        if isinstance(every, int) and not isinstance(every, bool) and every >= 1:
            self._telemetry_every = min(every, MAX_TELEMETRY_EVERY)
        self.runtime.operator_drain.set(  # control drain NODE (node/operator_drain.py)
            reply.get("draining") is True,
            settle=DRAIN_SETTLE_INTERVALS
            * (self.settings.heartbeat_interval or self.client.heartbeat_interval())
            + DRAIN_SETTLE_EXTRA,
        )
        self.route_tests.take(reply.get("route_tests"))  # queued from the console
        self._own_record = client.record_blob()
        self._apply_access_policy()
        health = reply.get("health")
        self.health = str(health) if health is not None else None
        reasons = reply.get("reasons")
        self.reasons = [str(r) for r in reasons] if isinstance(reasons, list) else []
        for name, mode in self.served():
            if name not in self._registered:
                answer = await client.register_service(name, mode)
                self._registered.add(name)
                log_event(log, "service registered", service=name, me=answer.get("me"))
            leases = await client.service_leases(name)
            self.failovers.service_leases(name, leases)
        cached = client.cached_directory() or {}
        version = reply.get("directory_version")
        if not cached or (isinstance(version, int) and version != cached.get("version")):
            cached = await client.directory()
        self._apply_directory(cached)
        own = client.record()
        if own is not None and Role.OBSERVER in own.roles:  # ADR 0038
            try:
                self.observer.ingest(await client.telemetry(), self._clock())
            except ControlRefused as refused:  # e.g. an older control plane: not fatal
                if self.observer.error != str(refused):
                    log_event(log, "telemetry refused", logging.WARNING, error=str(refused))
                self.observer.error = str(refused)
        await client.renew_due()
        await self._around_drained()
        for name, traffic_class in sorted(client.wanted):  # renewed: in the node's route book
            self._publish(name, traffic_class, client.cached_route_leases(name, traffic_class))

    def _check_interval(self) -> None:
        """Warn once per change when ``[control] heartbeat_interval`` exceeds the policy's
        (the node would flap late/unreachable at the control plane, silently before)."""
        mismatch = heartbeat_mismatch(self.settings.heartbeat_interval, self.client.policy())
        if mismatch == self.interval_mismatch:
            return
        self.interval_mismatch = mismatch
        if mismatch is not None:
            log_event(
                log, "heartbeat interval exceeds the policy", logging.WARNING,
                configured_s=mismatch.configured_s, policy_s=mismatch.policy_s,
                late_after_s=mismatch.late_after_s,
                unreachable_after_s=mismatch.unreachable_after_s, effect=mismatch.effect,
                fix="remove [control] heartbeat_interval or lower it",
            )  # fmt: skip

    def _apply_access_policy(self) -> None:
        """Hand the cached (verified) access policy to the node's access check."""
        cached = self.client.cached_access_policy()
        if cached is None:
            return
        access = self.runtime.access
        held = access.policy
        if held is not None and cached[1] < held.revision:
            return
        try:
            policy = access.take_policy(cached[0])
        except SignedObjectRejected as error:
            log_event(log, "access policy refused", logging.WARNING, error=str(error))
            return
        if held is None or held.revision != policy.revision:
            log_event(
                log, "access policy", revision=policy.revision, grants=len(policy.grants),
                expires_in_s=round(policy.expires_ms / 1000 - self._clock()),
            )  # fmt: skip

    # ------------------------------------------------------------ facts

    def facts(self, *, detail: bool = True) -> HeartbeatFacts:
        """What the next heartbeat says; without ``detail`` none of the sampled telemetry
        (streams, routes, endpoint health, relay usage: control/server/telemetry.py)."""
        runtime = self.runtime
        endpoints = [bound.endpoint for bound in runtime.listeners]
        transports = tuple(dict.fromkeys(TRANSPORT_OF.get(e.carrier, "tcp_tls") for e in endpoints))
        relay = "relay" in runtime.config.roles
        services = tuple(ServiceCapacity(name=name) for name, _ in self.served())
        facts = HeartbeatFacts(
            software_version=SOFTWARE,
            transports=transports,
            reachable=bool(endpoints),
            endpoints=tuple(dict.fromkeys(e.url for e in endpoints))[:MAX_ENDPOINTS],
            peers=self._peer_measurements(),
            relay_opt_in=relay,
            relay_classes=tuple(c.name.lower() for c in TrafficClass) if relay else (),
            services=services,
            endpoint_health=self._endpoint_health() if detail else (),
            class_bytes=self._class_bytes(),
            route_reports=self._route_reports() if detail else (),
            relay_usage=self._relay_usage() if detail else (),
            stream_reports=self._stream_reports() if detail else (),
            route_cache_version=self.route_cache_version,
            sessions=runtime.accepted_sessions,
        )
        host = runtime.host  # measured on the machine (node/host/host_monitor.py)
        return dataclasses.replace(
            facts,
            peers=host.with_bandwidth(facts.peers),
            **host.heartbeat_fields(facts.relay_opt_in),
            **host.nat_fields(listening=bool(endpoints)),
        )

    def _stream_reports(self) -> tuple[StreamReport, ...]:
        """The busiest live streams (``diag stream``'s rows), for the console."""
        rows = sorted(
            NodeDiagnostics(self.runtime).streams(),
            key=lambda r: (r["queued"], r["bytes_in"] + r["bytes_out"]),
            reverse=True,
        )
        return tuple(
            StreamReport(
                peer=str(r["peer"]),
                service=str(r["service"]),
                traffic_class=str(r["class"]),
                state=str(r["state"]),
                credit=max(0, int(r["credit"])),
                bytes_in=int(r["bytes_in"]),
                bytes_out=int(r["bytes_out"]),
                queued=int(r["queued"]),
                unacked=max(0, int(r["unacked"])),
                rtt_ms=r["rtt_ms"],
                blocked=str(r["blocked"]),
            )
            for r in rows[:MAX_STREAM_REPORTS]
        )

    def _relay_usage(self) -> tuple[RelayUsage, ...]:
        usage = self.runtime.data_plane.relay.quotas.usage
        return tuple(
            RelayUsage(
                tenant=tenant,
                traffic_class=cls.name.lower(),
                streams=u.streams,
                active=u.active,
                bytes_from_source=u.bytes_up,
                bytes_to_source=u.bytes_down,
            )
            for (tenant, cls), u in sorted(usage.items())[:MAX_ROUTE_REPORTS]
        )

    def _class_bytes(self) -> tuple[ClassBytes, ...]:
        totals = self.runtime.observe.metrics.bytes_by_class()
        return tuple(
            ClassBytes(traffic_class=cls, bytes_in=i, bytes_out=o)
            for cls, (i, o) in totals.items()
            if cls in CLASS_NAMES
        )

    def _route_reports(self) -> tuple[RouteReport, ...]:
        """The leased routes with the bytes of their live streams (for the console)."""
        runtime = self.runtime
        live: dict[int, int] = {}  # route id -> bytes of the live streams on it
        for connection in runtime.observe.connections():
            if connection.is_closed:
                continue
            for stream in connection.session.metrics().streams:
                route_id = runtime.routes.route_of(connection, stream.stream_id)
                if route_id is not None:
                    live[route_id] = live.get(route_id, 0) + stream.bytes_in + stream.bytes_out
        reports = []
        position: dict[tuple[str, str], int] = {}
        for row in runtime.routes.observations()[:MAX_ROUTE_REPORTS]:
            hops = tuple(str(h) for h in row["hops"])  # type: ignore[attr-defined]
            service, cls = str(row["service"]), str(row["traffic_class"])
            rank = position.get((service, cls), 0)  # the lease's order: primary first
            position[(service, cls)] = rank + 1
            srtt, recovery = row.get("srtt_ms"), row.get("recovery_ms")
            reports.append(
                RouteReport(
                    route_id=int(row["route_id"]),  # type: ignore[call-overload]
                    service=service,
                    traffic_class=cls,
                    rank=rank,
                    hops=hops,
                    healthy=bool(row["healthy"]),
                    srtt_ms=float(srtt) if isinstance(srtt, int | float) else None,
                    bytes=live.get(int(row["route_id"]), 0),  # type: ignore[call-overload]
                    last_switch=str(row.get("last_switch") or ""),
                    recovery_ms=float(recovery) if isinstance(recovery, int | float) else None,
                )
            )
        return tuple(reports)

    def served(self) -> list[tuple[str, str]]:
        """(service, replica mode) of every service this process serves, and only those.

        What the dispatcher has a handler for — ``[[services]]`` once the services
        component started them, ``vpn`` under ``vpn up --exit`` — is what the node
        registers and heartbeats: a ``[[services]]`` entry nothing serves is never
        advertised (docs/services.md, "One process per node").
        """
        modes = {s.name: s.mode for s in self.runtime.config.services}
        out = []
        for name in self.runtime.dispatcher.hosted[:MAX_SERVICES]:
            mode = modes.get(name, "forward")
            out.append((name, "active-active" if mode == "forward" else mode))
        return out

    def _peer_measurements(self) -> tuple[PeerMeasurement, ...]:
        """RTTs of live sessions, then the first hops of leased routes (route observations)."""
        runtime = self.runtime
        rtts: dict[str, float] = {}
        sessions = [runtime.peers.current(p) for p in runtime.peers.peer_ids]
        for connection in [*sessions, *runtime.observe.connections()]:
            if connection is None or connection.is_closed:
                continue
            session = connection.session
            peer, srtt = session.peer_node_id, session.rtt.srtt
            if not srtt and session.state is SessionState.READY:
                srtt = UNMEASURED_RTT  # its first PONG is still on its way: report the
                # session anyway (the planner takes a node's newer word over its peer's)
            if peer and peer != runtime.node_id and srtt:
                rtts.setdefault(peer, round(srtt * 1e3, 3))
        failures: dict[str, float] = {}
        for observation in runtime.routes.observations():
            hop, srtt_ms = observation.get("first_hop"), observation.get("srtt_ms")
            if not isinstance(hop, str) or hop == runtime.node_id or self._is_lost(hop):
                continue
            if isinstance(srtt_ms, int | float):
                rtts.setdefault(hop, float(srtt_ms))
            if observation.get("healthy") is False:
                failures[hop] = 1.0
        return tuple(
            PeerMeasurement(node_id=peer, rtt_ms=min(rtt, 600_000.0), loss=failures.get(peer, 0.0))
            for peer, rtt in list(rtts.items())[:MAX_PEERS]
        )

    def _endpoint_health(self) -> tuple[EndpointHealth, ...]:
        report = self.runtime.dialer.ranker.health_report(
            asyncio.get_running_loop().time(), MAX_ENDPOINT_HEALTH
        )
        out = []
        for entry in report:
            try:
                out.append(
                    EndpointHealth(
                        transport=str(entry.get("transport", "")),
                        address=str(entry.get("address", "")),
                        node_id=_opt_str(entry.get("node_id")),
                        success_rate=_opt_float(entry.get("success_rate")),
                        latency_ms=_opt_float(entry.get("latency_ms")),
                        dials=float(entry.get("dials") or 0.0),  # type: ignore[arg-type]
                        consecutive_failures=int(entry.get("consecutive_failures") or 0),  # type: ignore[call-overload]
                        backoff_remaining_s=float(entry.get("backoff_remaining_s") or 0.0),  # type: ignore[arg-type]
                        age_s=float(entry.get("age_s") or 0.0),  # type: ignore[arg-type]
                        last_reason=str(entry.get("last_reason") or ""),
                    )
                )
            except (TypeError, ValueError):
                continue
        return tuple(out)

    # ------------------------------------------------------------ directory

    def _apply_directory(self, directory: dict[str, Any] | None) -> None:
        if not directory:
            return
        runtime = self.runtime
        runtime.sealing_keys.learn_directory(directory)  # sealed streams (docs/sealing.md)
        runtime.access.learn_directory(directory)  # openers' records: tenant, roles, tier
        static = {p.node_id for p in runtime.config.peers}
        placed = directory.get("placement")
        placement = [str(n) for n in placed] if isinstance(placed, list) and placed else None
        listed = {entry.get("node_id") for entry in directory.get("entries", [])}
        self._drained_peers = {
            str(entry.get("node_id"))
            for entry in directory.get("entries", [])
            if entry.get("draining") is True
        }
        for gone in sorted(self._directory_peers - listed):  # unreachable, or out of view
            self._directory_peers.discard(gone)
            self._probe_failures.pop(gone, None)
            log_event(log, "directory peer gone", peer=gone)
        for entry in directory.get("entries", []):
            node_id = entry.get("node_id")
            if not isinstance(node_id, str) or node_id == runtime.node_id or node_id in static:
                continue
            endpoints: list[Endpoint] = []
            for url in entry.get("endpoints", []):
                with contextlib.suppress(ValueError, TypeError):
                    endpoints.append(parse_endpoint_url(url))
            if not endpoints:
                continue
            runtime.peers.set_peer(node_id, endpoints)
            if node_id not in self._directory_peers:
                self._directory_peers.add(node_id)
                log_event(log, "directory peer", peer=node_id, endpoints=len(endpoints))
            if placement is not None:
                continue  # dialled below: the placed entry only
            if (
                len(self._probes) < MAX_PROBES
                and node_id not in self._probes
                and not self._has_session(node_id)
                and node_id not in self._drained_peers  # it would GOAWAY the probe at once
                and self._clock() >= self._probe_failures.get(node_id, (0, 0.0))[1]
            ):
                self._probes[node_id] = asyncio.create_task(self._probe(node_id))
        if placement is not None:
            self._place(placement)

    def _watch(self, connection: SessionConnection | None) -> None:
        """Re-home as soon as ``connection`` (the placed session) ends, whoever dialled it
        (a probe, or a stream's route that got there first, or a dial that outlived its
        probe's timeout): not only at the next control cycle."""
        if connection is None or connection is self._watched:
            return
        if self._watcher is not None:
            self._watcher.cancel()
        self._watched = connection
        self._watcher = asyncio.create_task(self._rehome_when_closed(connection))

    async def _rehome_when_closed(self, connection: SessionConnection) -> None:
        """... or as soon as its entry sends GOAWAY (drained by the operator, shutting
        down): the entry is then avoided like a lost one, and the control link heartbeats
        at once (the directory's placement has likely changed)."""
        goaway = asyncio.Event()

        def on_event(event: object) -> None:
            if isinstance(event, GoawayReceived):
                goaway.set()

        connection.on_event.append(on_event)
        waits = [
            asyncio.ensure_future(connection.wait_closed()),
            asyncio.ensure_future(goaway.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            with contextlib.suppress(ValueError):
                connection.on_event.remove(on_event)
        if goaway.is_set():
            self._wake.set()
        pause = self._rng.uniform(0.0, REHOME_SPREAD)  # the entry's devices spread out
        ended, entry = connection.session.terminated, connection.session.peer_node_id
        hint = retry_hint(ended.reason) if ended is not None and ended.remote else None
        now = self._clock()
        if entry:
            self._ended[entry] = now
        alternates = [
            n
            for n in self._placement
            if n != entry
            and n in self._directory_peers
            and now >= self._probe_failures.get(n, (0, 0.0))[1]
        ]
        if entry and not self._stop.is_set() and (alternates or hint is not None):
            failures = self._probe_failures.get(entry, (0, 0.0))[0] + 1
            avoid = LOST_ENTRY_AVOID if hint is None else hint  # a GOAWAY's retry hint
            self._probe_failures[entry] = (failures, now + avoid)
            self._lost[entry] = now + avoid
            if hint is not None:
                log_event(log, "entry asked to retry later", peer=entry, retry_in=round(hint, 1))
        asyncio.get_running_loop().call_later(pause, self._place_again)

    def _place_again(self) -> None:
        if not self._stop.is_set() and self._placement:
            self._place(self._placement)

    def _place(self, placement: list[str]) -> None:
        """Hold one session to an entry of the control plane's ``placement``.

        The first entry not backing off after a failed dial is the one; a device that
        holds a session with any placed entry stays where it is (no churn when loads
        change), also while a directory leaves that entry out (its heartbeat late at the
        control plane).  When the placed session ends (:meth:`_watch`), after a jittered
        pause (:data:`REHOME_SPREAD`, so a dead entry's devices do not all arrive at
        once) the next alternate is dialled, without waiting for the next cycle: the
        lost entry backs off for :data:`LOST_ENTRY_AVOID` (or a GOAWAY's retry hint)
        and a dial to it under way does not count as placed meanwhile.
        """
        self._placement = placement
        known = [n for n in placement if n in self._directory_peers]
        peers = self.runtime.peers
        now = self._clock()
        for node_id in known:
            lost = now < self._lost.get(node_id, 0.0)  # its session just ended: a dial to
            # it under way (a stream's route, say) is no placement, the alternate is next
            dialing = not lost and (peers.dialing(node_id) or node_id in self._probes)
            if self._has_session(node_id) or dialing:
                self._home = node_id
                self._watch(peers.current(node_id))
                return  # placed, or a dial still under way (one that outlived its probe too)
        home = self._home
        held = home is not None and (
            self._has_session(home)
            or (now >= self._lost.get(home, 0.0) and (peers.dialing(home) or home in self._probes))
        )
        if held and home not in self._directory_peers:
            # Our entry is missing from this directory, yet its session lives: its
            # heartbeat was late at the control plane (unreachable there for a moment),
            # the session is first-hand news.  Dialling the next entry now left the
            # device with sessions to both (issue 17); if the entry is really gone, its
            # session ends and _rehome_when_closed places the device again.
            return
        for node_id in known:
            if now >= self._probe_failures.get(node_id, (0, 0.0))[1]:
                self._home = node_id
                self._probes[node_id] = asyncio.create_task(self._probe(node_id, rehome=True))
                return

    def _has_session(self, node_id: str) -> bool:
        """A live session with ``node_id``, dialled or accepted: its RTT is measured
        already (``_peer_measurements``), so there is nothing to probe."""
        runtime = self.runtime
        if runtime.peers.current(node_id) is not None:
            return True
        return any(  # a session the peer is draining (GOAWAY) does not count
            c.is_ready
            and c.session.state is SessionState.READY
            and c.session.peer_node_id == node_id
            for c in runtime.observe.connections()
        )

    async def _probe(self, node_id: str, *, rehome: bool = False) -> None:
        """Open a session to a directory peer so its RTT reaches the next heartbeat.

        A failed probe is retried after exponential backoff with jitter, capped at
        :data:`PROBE_BACKOFF_MAX`; a peer that holds a session to us is never probed.
        """
        try:
            connection = await asyncio.wait_for(self.runtime.peers.session(node_id), 10.0)
            self._probe_failures.pop(node_id, None)
            if rehome:  # re-home as soon as this session ends, not at the next cycle
                self._watch(connection)
                # and tell the planner now (once the session's RTT probe came back):
                # until a heartbeat reports this first hop, leases still go through the
                # lost entry (streams failed there, issue 17)
                for _ in range(20):
                    if connection.session.rtt.srtt or connection.is_closed:
                        break
                    await asyncio.sleep(0.05)
                self._report.set()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures = self._probe_failures.get(node_id, (0, 0.0))[0] + 1
            delay = probe_retry_delay(failures, self._rng, rehome=rehome)
            if node_id in self._directory_peers:
                self._probe_failures[node_id] = (failures, self._clock() + delay)
            if rehome:  # the next alternate soon, but not all of the entry's devices at once
                # ... and not before one is out of its back-off: a retry while every
                # placed entry backs off placed nothing, and the device waited for its
                # next control cycle (a whole heartbeat interval: ~530 devices re-homing
                # onto an entry whose handshake budget refused some took 19.6 s, ADR 0037)
                now = self._clock()
                ready_in = [
                    max(0.0, self._probe_failures.get(n, (0, 0.0))[1] - now)
                    for n in self._placement
                    if n in self._directory_peers
                ]
                pause = min(ready_in, default=delay) + self._rng.uniform(0.0, REHOME_SPREAD)
                asyncio.get_running_loop().call_later(pause, self._place_again)
            level = logging.INFO if failures == 1 else logging.DEBUG  # one line per outage
            log_event(
                log, "directory peer probe failed", level, peer=node_id, error=error,
                failures=failures, retry_in=round(delay, 1),
            )  # fmt: skip
        finally:
            self._probes.pop(node_id, None)

    # ------------------------------------------------------------ route leases

    async def route_source(self, service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
        """``RouteManager.source``: cached leases while valid, else fresh from the control plane.

        Why none could be had is kept for ``status`` and logged (:meth:`_route_error`).
        """
        client = self.client
        key = (service, traffic_class)
        cached = client.cached_route_leases(service, traffic_class)  # fenced ones refused
        # Leases whose first hop is an entry this device just lost (its session ended:
        # SIGKILL, GOAWAY) cannot carry a stream; new ones are needed (issue 17).
        # And a lease through an entry whose session ended since it was issued, with none
        # held again, is none either, also once the entry's back-off (LOST_ENTRY_AVOID)
        # is over: a device that streamed nothing while it re-homed still held it, and
        # its first stream after 10 s dialled the dead entry (ADR 0064).
        live = usable = [
            u for u in cached if not self._via_lost(u.lease.hops) and not self._stale(u)
        ]
        if not [u for u in live if not self._through_drained(u.lease.hops)] and (
            not live or self._drained_refetch_due(key)
        ):  # none, or all through a drained node (fetch one around it)
            try:
                usable = await self._fresh_leases(service, traffic_class)
            except (NoUsableLease, ControlRefused) as error:
                if not live:
                    raise self._route_error(key, _lease_refusal(service, error)) from None
                usable = live  # through a drained node: it still carries streams meanwhile
            finally:
                if self._unreachable and client.reachable:
                    self._wake.set()  # it answers again: heartbeat now, not after the backoff
        client.wanted.add(key)
        return self._publish(service, traffic_class, usable)

    async def _fresh_leases(self, service: str, traffic_class: TrafficClass) -> list[LeasedRoute]:
        """New leases.  While the device re-homes (its entry's session ended) the planner
        may still route through the lost entry, or know no first hop of it at all
        (``no_route``): then wait (at most :data:`LOST_LEASE_WAIT`) for a session with
        another placed entry and a heartbeat that reports it, and ask once more;
        :class:`NoUsableLease` says the device is still re-homing when the wait ends
        first."""
        client = self.client
        try:
            fresh = await client.route_leases(service, traffic_class)
        except ControlRefused as error:
            if error.code != "no_route" or not self._rehoming():
                raise
            fresh = []
        if fresh and not all(self._via_lost(u.lease.hops) for u in fresh):
            return fresh
        if not self._rehoming():
            return fresh
        lost = sorted(n for n in self._lost if self._is_lost(n))
        try:
            async with asyncio.timeout(LOST_LEASE_WAIT):
                await self._reported()
        except TimeoutError:  # no lease request: the planner knows no other first hop
            raise NoUsableLease(
                f"re-homing: this device lost its entry {', '.join(lost)} and has not "
                f"reported a session with another within {LOST_LEASE_WAIT:g} s"
            ) from None
        await asyncio.sleep(PLANNER_SNAPSHOT_AGE)  # the planner's snapshot takes it in
        again = await client.route_leases(service, traffic_class)
        return [u for u in again if not self._via_lost(u.lease.hops)]

    async def _reported(self) -> None:
        """Until a session with a placed entry (not a lost one) is up and a heartbeat
        whose facts were taken after that has been answered."""
        while not any(self._has_session(n) and not self._is_lost(n) for n in self._placement):
            await asyncio.sleep(0.1)
        marker = self._facts_taken
        self._report.set()
        while self._facts_answered <= marker:
            await self._heard.wait()

    def _rehoming(self) -> bool:
        """An entry's session with this device ended lately (:data:`LOST_ENTRY_AVOID`)
        and none is held with it again: the planner may not know the device's new one."""
        return any(self._is_lost(n) for n in self._lost)

    def _is_lost(self, node_id: str) -> bool:
        """Its session with this device ended lately and none is held again."""
        return self._clock() < self._lost.get(node_id, 0.0) and not self._has_session(node_id)

    def _stale(self, route: LeasedRoute) -> bool:
        """``route`` was issued before its first hop's session with this device ended,
        and none is held again."""
        hops = route.lease.hops
        if len(hops) < 2 or hops[0] != self.runtime.node_id:
            return False
        ended = self._ended.get(hops[1])
        return (
            ended is not None
            and route.lease.issued_ms / 1000 < ended
            and not self._has_session(hops[1])
        )

    def _via_lost(self, hops: tuple[str, ...]) -> bool:
        return len(hops) > 1 and hops[0] == self.runtime.node_id and self._is_lost(hops[1])

    async def _around_drained(self) -> None:
        """Replace the leases of wanted (service, class) whose every lease passes a drained
        peer, before a stream needs them (the planner routes around a drained node once it
        knows another first hop of ours; until then the old leases stay, and the next
        cycle comes in :data:`DRAINED_REFETCH_INTERVAL`).  A device whose leases all go
        around then ends its own session with the drained entry (GOAWAY: streams on it
        finish), so the entry need not tell it."""
        if not self._drained_peers:
            return
        client = self.client
        stuck = False
        for key in sorted(client.wanted):
            if self._only_through_drained(key) and self._drained_refetch_due(key):
                with contextlib.suppress(NoUsableLease, ControlRefused, ControlUnavailable):
                    await client.route_leases(*key)
            stuck = stuck or self._only_through_drained(key)
        if stuck:
            asyncio.get_running_loop().call_later(DRAINED_REFETCH_INTERVAL, self._wake.set)
            return
        if not any(self._has_session(n) for n in self._placement if n not in self._drained_peers):
            return  # a device's own move only, once it holds its new entry
        for peer in sorted(self._drained_peers - set(self._placement)):
            if self.runtime.peers.current(peer) is not None:
                log_event(log, "leaving a drained entry", peer=peer)
                await self.runtime.peers.close_peer(peer, ErrorCode.NO_ERROR, "entry drained")

    def _only_through_drained(self, key: tuple[str, TrafficClass]) -> bool:
        live = self.client.cached_route_leases(*key)  # fenced ones refused
        return bool(live) and all(self._through_drained(u.lease.hops) for u in live)

    def _through_drained(self, hops: tuple[str, ...]) -> bool:
        """A hop after this node is drained by the operator (as the directory says)."""
        return any(hop in self._drained_peers for hop in hops[1:])

    def _drained_refetch_due(self, key: tuple[str, TrafficClass]) -> bool:
        """At most one lease request a second for a (service, class) whose leases all go
        through a drained node (the planner may not know another first hop yet)."""
        now = self._clock()
        if now - self._drained_refetch.get(key, -DRAINED_REFETCH_INTERVAL) < (
            DRAINED_REFETCH_INTERVAL
        ):
            return False
        self._drained_refetch[key] = now
        return True

    def _route_error(self, key: tuple[str, TrafficClass], reason: str) -> NoUsableRoute:
        """Keep why ``key`` has no route lease, and log it (not more than every 10 s)."""
        now = self._clock()
        self.route_errors[key] = (reason, now)
        if now - self._route_error_logged.get(key, -ROUTE_ERROR_LOG_INTERVAL) >= (
            ROUTE_ERROR_LOG_INTERVAL
        ):
            self._route_error_logged[key] = now
            log_event(
                log, "no route lease", logging.WARNING, service=key[0],
                traffic_class=key[1].name.lower(), reason=reason,
            )  # fmt: skip
        return NoUsableRoute(reason)

    def _publish(
        self, service: str, traffic_class: TrafficClass, routes: list[LeasedRoute]
    ) -> list[LeasedRoute]:
        """Note what the route leases of (service, class) are now: sealing keys, failover
        facts, the route cache version (``route_source`` only returns them; the
        ``RouteManager`` keeps what it was answered)."""
        for u in routes:  # the destination's sealing key comes with its route (least knowledge)
            if u.destination is not None:
                self.runtime.sealing_keys.add(
                    u.destination.node_id, u.destination.sealing_public_key,
                    expires=u.destination.expires_ms / 1000,
                )  # fmt: skip
        self.failovers.route_leases(service, traffic_class, [r.lease for r in routes])
        ids = tuple(sorted(r.lease.route_id for r in routes))
        if self._published.get((service, traffic_class)) != ids:
            self._published[(service, traffic_class)] = ids
            self.route_cache_version += 1
        if routes:
            key = (service, traffic_class)
            if self.route_errors.pop(key, None) is not None:
                self._route_error_logged.pop(key, None)
                log_event(
                    log, "route leases usable again", service=service,
                    traffic_class=traffic_class.name.lower(), routes=len(routes),
                )  # fmt: skip
        return routes

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The ``control`` section of ``accessfabric status``."""
        now = self._clock()
        snapshot = self.client.status()
        reachable = {None: "not tried yet", True: "reachable", False: "unreachable"}
        error = self.last_error or snapshot.last_error
        return {
            "url": self.client.base_url,
            "replicas": replica_summary(snapshot.replicas),
            "state": (
                f"enrollment refused ({self.enrollment_refused})"
                if self.enrollment_refused is not None
                else reachable[snapshot.reachable]
            ),
            "health": self.health or "-",
            "reasons": ", ".join(self.reasons) or "-",
            "last_heartbeat_s_ago": _ago(self.last_heartbeat_at, now),
            "last_error": error or "-",
            "last_error_s_ago": _ago(self.last_error_at or snapshot.last_error_at, now),
            "failures": self.failures,
            "cache_age_s": None if snapshot.cache_age_s is None else round(snapshot.cache_age_s),
            "record_revision": snapshot.record_revision,
            "directory_peers": len(self._directory_peers),
            "registered": ", ".join(sorted(self._registered)) or "-",
            "route_lease_error": " | ".join(
                f"{service}/{traffic_class.name.lower()}: {reason}"
                for (service, traffic_class), (reason, _) in sorted(self.route_errors.items())
            )
            or "-",
            "route_lease_error_s_ago": _ago(
                max((at for _, at in self.route_errors.values()), default=None), now
            ),
            "summary": snapshot.describe(now),
            "drain": _drain_text(self.runtime.operator_drain.status()),
            "heartbeat_interval": (
                "-" if self.interval_mismatch is None else self.interval_mismatch.describe()
            ),
        }

    def lease_rows(self) -> list[dict[str, Any]]:
        """Every cached route and service lease, with expiry and epochs."""
        now = self._clock()
        rows: list[dict[str, Any]] = []
        for document in self.client.cache.route_documents():
            service, name = document.get("service"), document.get("traffic_class")
            try:
                traffic_class = TrafficClass[str(name).upper()]
            except KeyError:
                continue
            scored = _scores(document)
            for route in self.client.cached_route_leases(str(service), traffic_class):
                lease = route.lease
                score, reasons = scored.get(lease.route_id, (None, "-"))
                rows.append(
                    {
                        "kind": "route",
                        "service": service,
                        "class": name,
                        "rank": route.rank or "-",
                        "route": lease.route_id,
                        "epoch": lease.epoch,
                        "fencing": lease.fencing_token,
                        "hops": len(lease.hops),
                        "expires_in_s": round(lease.expires_ms / 1000 - now),
                        "score": score,
                        "reasons": reasons,
                    }
                )
        for name, _ in self.served():
            for held in self.client.cached_service_leases(name):
                rows.append(
                    {
                        "kind": "service",
                        "service": name,
                        "class": "-",
                        "rank": "-",
                        "route": None,
                        "epoch": held.epoch,
                        "fencing": held.fencing_token,
                        "hops": None,
                        "expires_in_s": round(held.expires_ms / 1000 - now),
                        "score": None,
                        "reasons": "-",
                    }
                )
        return rows


def _lease_refusal(service: str, error: Exception) -> str:
    if isinstance(error, ControlRefused):
        return f"the control plane refused a route lease for {service!r}: {error}"
    return str(error)


class NotEnrolledYet(Exception):
    """No cached node record and no token to enroll with."""


def _scores(document: dict[str, Any], top: int = 3) -> dict[int, tuple[float | None, str]]:
    """Route id -> (planner score, its largest reasons as "factor +x") of a cached grant."""
    out: dict[int, tuple[float | None, str]] = {}
    for route in document.get("routes", []) or []:
        if not isinstance(route, dict) or not isinstance(route.get("route_id"), int):
            continue
        reasons = [r for r in route.get("reasons", []) or [] if isinstance(r, dict)]
        reasons.sort(key=lambda r: -abs(_opt_float(r.get("contribution")) or 0.0))
        text = ", ".join(
            f"{r.get('factor')} {_opt_float(r.get('contribution')) or 0.0:+.3g}"
            for r in reasons[:top]
        )
        out[route["route_id"]] = (_opt_float(route.get("score")), text or "-")
    return out


def _drain_text(status: dict[str, object]) -> str:
    if not status.get("draining"):
        return "-"
    return (
        f"drained by the operator for {status['for_s']} s: {status['sessions_told']} "
        f"sessions told GOAWAY ({status['told_with_streams']} with streams), "
        f"{status['sessions_left']} left"
    )


def _ago(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)[:256]


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def probe_retry_delay(failures: int, rng: random.Random, *, rehome: bool = False) -> float:
    """When a directory peer whose probe failed ``failures`` times in a row is probed
    again: exponential back-off with jitter, capped at :data:`REHOME_RETRY_CAP` for the
    first :data:`REHOME_FAST_RETRIES` failures of a re-home dial."""
    fast = rehome and failures <= REHOME_FAST_RETRIES
    cap = REHOME_RETRY_CAP if fast else PROBE_BACKOFF_MAX
    return backoff_delay(failures, rng, base=PROBE_BACKOFF_BASE, cap=cap)
