"""``NodeRuntime``: one node process — key, listeners, accepted sessions, static peers, shutdown.

* Listens on every ``[[listen]]`` endpoint; each accepted session's incoming
  streams go to the :class:`ServiceDispatcher` (``echo`` built in) once the data plane
  has let them through (access policy, default deny: :mod:`.access`).
* Dials static peers on demand through a :class:`PeerSessionManager`
  (``connect = "always"`` peers are kept up from the start).
* :meth:`NodeRuntime.shutdown`: stop listening, GOAWAY every session, let
  open streams finish for at most ``drain_timeout`` seconds, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, Protocol

from accessfabric.control.client.client import ControlClient
from accessfabric.control.kernel.route_book import RouteBook
from accessfabric.control.kernel.vocabulary import node_echo_service
from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.diagnostics import register_diagnostics
from accessfabric.node.admin.observability import NodeObservability
from accessfabric.node.admin.observer import ObserverMetrics
from accessfabric.node.config.config_checks import check_against_key
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.control_link import ControlLink
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import DEFAULT_DIAL_TIMEOUT, BoundListener, dial, listen
from accessfabric.node.dialing.endpoints import LocalNode, source_address
from accessfabric.node.dialing.network_watch import NetworkWatch
from accessfabric.node.dialing.peer_dialer import RankedPeerDialer, dial_metric_samples
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.host import sd_notify
from accessfabric.node.host.allocator import keep_large_blocks
from accessfabric.node.host.gc_pauses import freeze_startup_objects
from accessfabric.node.host.host_monitor import HostMonitor, SharedReadings, device_handler
from accessfabric.node.host.key_lock import KeyLock
from accessfabric.node.operator_drain import OperatorDrain
from accessfabric.node.routing.routes import RouteManager
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.node.serving.admission import Admission
from accessfabric.node.serving.dataplane import DataPlane
from accessfabric.node.serving.services import ECHO_SERVICE, ServiceDispatcher
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.node.streams.stream_sealing import SealingKeys, StreamSealing, sealing_cipher
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog
from accessfabric.timeouts import cancel_and_wait

log = logging.getLogger(__name__)

KEEP_UP_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SESSION_LOG_BURST = 20
"""``session accepted`` / ``session ended`` lines per source address per ``log_interval``:
any key can open sessions, so an outsider could otherwise grow the log at will."""


class NodeComponent(Protocol):
    """Something that runs with the node (services, forwards): started last, closed first."""

    async def start(self, runtime: NodeRuntime) -> None: ...

    async def close(self) -> None: ...


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)


class NodeRuntime:
    def __init__(
        self,
        config: NodeConfig,
        *,
        key: NodeKey | None = None,
        components: tuple[NodeComponent, ...] = (),
        host_readings: SharedReadings | None = None,
    ) -> None:
        """Load the key (``IdentityError`` names the file and the problem).

        ``host_readings``: the light profile of many runtimes in one process (``sim
        fleet``'s devices): their host monitors share the process's readings of
        ``/proc`` instead of each reading its own (node/host/host_monitor.py)."""
        self.config = config
        self.key = key if key is not None else NodeKey.load(config.key_path)
        self.local = LocalNode(
            key=self.key,
            cert_dir=config.cert_dir,
            session_config=config.session,
            tcp_rto_min=config.tcp_rto_min,
            admission=Admission(config.limits),
        )
        self.dispatcher = ServiceDispatcher()
        self.dispatcher.alias(node_echo_service(self.key.node_id), ECHO_SERVICE)  # ping via relays
        self.dialer = RankedPeerDialer(  # ranked candidates: docs/endpoint-ranking.md
            self.local, policy=config.ranking,
            timeout=config.session.handshake_timeout or DEFAULT_DIAL_TIMEOUT,
        )  # fmt: skip
        self.peers = PeerSessionManager(
            self._dial_peer,
            [(p.node_id, p.endpoints) for p in config.peers if p.node_id != self.key.node_id],
            opener=self.dialer.open,
        )
        self.listeners: list[BoundListener] = []
        self._accepted: set[SessionConnection] = set()
        self._session_log = RateLimitedLog(
            log, interval=config.limits.log_interval, burst=SESSION_LOG_BURST
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._cut_short = asyncio.Event()  # a second SIGTERM/SIGINT: stop draining
        self.observe = NodeObservability(self.key.node_id)
        self.observe.node_name = config.name
        self.observe.peer_names = config.peer_names()
        from accessfabric.node.admin.ping import ping_handler

        self.observe.admin_actions["/ping"] = ping_handler(self)
        # End-to-end sealing (docs/sealing.md): other nodes' keys from [[peers]],
        # [sealing.keys] and (with [control]) the directory's signed node records.
        static_keys = dict(config.sealing.keys)
        static_keys.update({p.node_id: p.sealing_key for p in config.peers if p.sealing_key})
        self.sealing_keys = SealingKeys(config.authority_key, static_keys)
        # Relaying, resume adoption and route failover (docs/relays.md): the data plane
        # sees every session's events from its creation on.
        # Access (docs/config.md, Access): default deny; static allow lists and, with
        # [control], the authority-signed grants the control link keeps current.
        self.access = ServiceAccess(self.key.node_id, config.allow_lists(), config.authority_key)
        self.route_book = RouteBook()
        """The node's verified route leases: one book for route execution and the control
        client, its fences shared with the lease check, so a ROUTE_UPDATE (or a fresher
        lease) fences all three at once and replaces the lease for every reader."""
        self.fences = self.route_book.fences
        self.data_plane = DataPlane(
            self.key.node_id, self.peers, config.authority_key, fences=self.fences,
            sealing_key=self.key.sealing_private_key(),  # opens sealed streams, binds resumes
            sealing_keys=self.sealing_keys, resume_window=config.routes.resume_window,
            access=self.access, relay_limits=config.limits.relay(),
        )  # fmt: skip
        timers = config.routes  # [routes] (docs/config.md)
        self.routes = RouteManager(
            self.key.node_id, self.peers, self.data_plane, authority_key=config.authority_key,
            resume_window=timers.resume_window, stall_timeout=timers.stall_timeout,
            interactive_stall_timeout=timers.interactive_stall_timeout,
            pressure_threshold=timers.pressure_threshold, cooldown=timers.cooldown,
            book=self.route_book,
        )  # fmt: skip
        self.routes.sealing = StreamSealing(
            self.key.node_id, self.key.sealing_private_key(), self.sealing_keys,
            one_hop=config.sealing.one_hop, cipher=sealing_cipher(config.sealing.cipher),
        )  # fmt: skip
        # Refused streams are logged at a bounded rate and charge the peer
        # (node/serving/admission.py).
        self.data_plane.router.on_refused = self.local.stream_refused
        self.dispatcher.on_refused = lambda stream, reason: self.local.stream_refused(
            stream.connection, reason, stream.service
        )
        self.observe.watch_admission(self.local.admission)
        tenants = (
            self.local.admission.tenants
        )  # sessions per tenant (node/serving/tenant_admission.py)
        self.data_plane.hooks.append(tenants.hook(self.access.record_of, time.monotonic))
        self.observe.add_section("tenants", tenants.status)
        self.observe.watch_routes(self.routes)
        self.observe.watch_refusals(lambda: dict(self.data_plane.router.refused))
        self.observe.watch_relay(self.data_plane.relay, always="relay" in config.roles)
        self.observe.watch_samples(lambda: dial_metric_samples(self.dialer.counters))
        self.observe.add_section("endpoints", self._endpoint_rows)
        self.observe.add_section("access", self.access.status)
        register_diagnostics(self)  # `accessfabric diag` over the admin socket
        self.local.on_new_connection = self._new_connection
        # Facts measured on the machine, NODE_PRESSURE, the mobile relay gate
        # (node/host/host_monitor.py; docs/control.md "Heartbeat facts").
        self.host = HostMonitor(config, self.observe.connections, readings=host_readings)
        self.data_plane.router.relay_gate = self.host.relay_refusal
        self.observe.add_section("host", self.host.status)
        self.observe.admin_actions["/device"] = device_handler(self.host)
        self.network_watch = NetworkWatch(self.observe.connections)  # address changes
        self.network_watch.on_change = self.host.nat.probe_soon  # a new NAT, perhaps
        self.components = list(components)
        self.operator_drain = OperatorDrain(self)  # control drain NODE (node/operator_drain.py)
        self.control: ControlLink | None = None
        if config.control is not None:  # docs/config.md [control]
            self.control = ControlLink(self, config.control)
            self.observe.add_section("control", self.control.status)
            self.observe.add_section("leases", self.control.lease_rows)
            control = self.control
            self.observe.add_section("observer", lambda: control.observer.status(time.time()))
            self.observe.registry.register(ObserverMetrics(control.observer))

    def _endpoint_rows(self) -> list[dict[str, object]]:
        """Every known peer's endpoint candidates, best first, with score and reasons."""
        rows: list[dict[str, object]] = []
        for node_id in self.peers.peer_ids:
            endpoints = self.peers.endpoints(node_id)
            for rank, ranked in enumerate(self.dialer.rank(node_id, endpoints), start=1):
                row = ranked.to_dict()
                reasons = row.pop("reasons")
                assert isinstance(reasons, list)
                rows.append(
                    {"peer": node_id, "rank": rank, **row,
                     "reasons": "; ".join(f"{r['factor']} {r['contribution']:+}" for r in reasons)}
                )  # fmt: skip
        return rows

    def _new_connection(self, connection: SessionConnection) -> None:
        self.observe.track(connection)
        self.data_plane.attach(connection)

    @property
    def node_id(self) -> str:
        return self.key.node_id

    @property
    def accepted_sessions(self) -> int:
        return len(self._accepted)

    def accepted_connections(self) -> list[SessionConnection]:
        """The sessions other nodes opened to this one, live or ending."""
        return list(self._accepted)

    @property
    def control_client(self) -> ControlClient | None:
        return None if self.control is None else self.control.client

    def _plug_control(self, control: ControlLink) -> None:
        """The control link answers route execution's, the sealing keys' and HELLO's
        questions; the host monitor wakes it (nothing plugs itself into the runtime)."""
        self.routes.source = control.route_source
        self.host.on_relay_change = control.wake  # mobile relay state: heartbeat now
        self.sealing_keys.refresh = control.client.directory  # a sealing key is missing
        if self.routes.sealing is not None:  # sealed opens carry this node's record
            self.routes.sealing.own_record = control.client.record_blob
        self.local.node_record = control.own_record  # sent in HELLO

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        """Bind every listener (an ``OSError`` or ``CarrierUnavailableError`` stops start-up)."""
        log_event(
            log, "node starting", node_id=self.node_id, name=self.config.name or "-",
            roles=",".join(self.config.roles) or "-", config=self.config.source,
        )  # fmt: skip
        try:
            for endpoint in self.config.listen:
                bound = await listen(self.local, endpoint, self._on_connection)
                self.listeners.append(bound)
                log_event(
                    log, "listening", carrier=bound.endpoint.carrier,
                    address=bound.endpoint.address, url=bound.endpoint.url,
                )  # fmt: skip
            await self.observe.start(self.config.metrics_listen, self.config.admin_socket)
            await self.host.start()
            await self.network_watch.start()
            if self.control is not None:
                self._plug_control(self.control)
                await self.control.start()
            for component in self.components:
                await component.start(self)
        except BaseException:
            for bound in self.listeners:
                bound.close()
            if self.control is not None:
                await self.control.close()
            await self.host.close()
            await self.network_watch.close()
            await self.observe.close()
            raise
        for peer in self.config.peers:
            if peer.connect == "always" and peer.node_id != self.node_id:
                self._keepers.append(asyncio.create_task(self._keep_up(peer)))
        self.observe.ready = not self.operator_drain.active  # drained before start ended
        log_event(
            log, "node ready", node_id=self.node_id, listeners=len(self.listeners),
            sealing_cipher=self.routes.sealing.cipher.label if self.routes.sealing else "none",
        )  # fmt: skip

    def _on_connection(self, connection: SessionConnection) -> None:
        if self._stopping:
            connection.abort()
            return
        self._accepted.add(connection)
        task = asyncio.create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: SessionConnection) -> None:
        address = connection.info.peer_address
        try:
            try:
                ready = await connection.ready()
            except Exception as error:
                # An outsider can cause these at will: one line per interval per (source
                # address, error kind), with a suppressed count (node/serving/admission.py).
                text = (str(error) or type(error).__name__)[:200]
                self.local.admission.refusal_log.log(
                    (source_address(connection.info), "session rejected", type(error).__name__),
                    logging.INFO, "session rejected address=%s carrier=%s error=%s",
                    address, connection.info.kind, text,
                    now=asyncio.get_running_loop().time(),
                )  # fmt: skip
                return
            peer = ready.peer_node_id
            # per-connection lines an outsider can cause: at most SESSION_LOG_BURST per
            # source address per interval, the accepted and ended line of a session together
            logged = self._session_log.admit(
                source_address(connection.info), asyncio.get_running_loop().time()
            )
            if logged is not None:
                log_event(
                    log, "session accepted", peer=peer, address=address,
                    carrier=connection.info.kind, name=self.observe.peer_names.get(peer or "", "-"),
                    **({"suppressed": logged} if logged else {}),
                )  # fmt: skip
            if self.operator_drain.active:  # drained: the peer opens its streams elsewhere
                await self.operator_drain.refuse(connection)
            while True:
                stream = await connection.accept_stream()
                if stream is None:
                    break
                routed = self.data_plane.incoming(stream)  # None: relayed or resumed
                if routed is not None:
                    self.dispatcher.dispatch(routed, peer)
            ended = await connection.wait_closed()
            if logged is not None:
                log_event(
                    log, "session ended", peer=peer, address=address,
                    code=_code_name(ended.error_code), reason=ended.reason,
                )  # fmt: skip
        finally:
            self._accepted.discard(connection)

    # ------------------------------------------------------------ peers

    async def _dial_peer(self, endpoint: Endpoint, node_id: str) -> SessionConnection:
        timeout = self.config.session.handshake_timeout or DEFAULT_DIAL_TIMEOUT
        return await dial(self.local, endpoint, expected_peer_id=node_id, timeout=timeout)

    async def _keep_up(self, peer: PeerConfig) -> None:
        """Keep a session to ``peer`` open: reopen when it ends, backing off while it fails."""
        failures = 0
        while not self._stopping:
            try:
                connection = await self.peers.session(peer.node_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = KEEP_UP_BACKOFF[min(failures, len(KEEP_UP_BACKOFF) - 1)]
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            await connection.wait_closed()

    # ------------------------------------------------------------ shutdown

    async def shutdown(self, reason: str = "node shutting down") -> bool:
        """GOAWAY, drain (bounded by ``drain_timeout``), close.  True when all drained in time."""
        if self._stopping:
            return True
        self._stopping = True
        self.observe.ready, self.observe.not_ready_reason = False, "draining"
        timeout = self.config.drain_timeout
        log_event(
            log, "node draining", sessions=len(self._accepted) + self.peers.counters().active,
            streams=self.dispatcher.active, timeout=timeout,
        )  # fmt: skip
        for bound in self.listeners:
            bound.close()
        for component in reversed(self.components):
            with contextlib.suppress(Exception):
                await component.close()
        if self.control is not None:
            await self.control.close()
        await self.operator_drain.close()
        await self.host.close()
        await self.network_watch.close()
        for keeper in self._keepers:
            keeper.cancel()
        for connection in list(self._accepted):
            await connection.goaway(ErrorCode.NO_ERROR, reason)
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self.peers.aclose(drain_timeout=timeout, reason=reason)),
            *(asyncio.ensure_future(c.wait_closed()) for c in self._accepted),
        ]
        draining = asyncio.ensure_future(asyncio.wait(waits, timeout=timeout))
        cut = asyncio.ensure_future(self._cut_short.wait())
        await asyncio.wait((draining, cut), return_when=asyncio.FIRST_COMPLETED)
        cut.cancel()
        if not draining.done():
            draining.cancel()
            log_event(log, "drain cut short", logging.WARNING)
        pending = [future for future in waits if not future.done()]
        for future in pending:
            future.cancel()
        drained = not pending
        for connection in list(self._accepted):
            connection.abort()
        self.dispatcher.cancel_all()
        await self.routes.aclose()
        await self.data_plane.aclose()
        await cancel_and_wait([*self._tasks, *self._keepers])
        await self.observe.close()
        await self.dialer.aclose()
        log_event(log, "node stopped", drained=drained)
        return drained

    def cut_drain_short(self) -> None:
        """End a running (or the next) drain now: sessions are closed without waiting."""
        self._cut_short.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config file; apply what can change live, log what cannot."""
        from accessfabric.node.config.node_config import ConfigError, load_node_config
        from accessfabric.node.reload import plan_reload

        source = self.config.source
        if not source or source in ("environment", "command line"):
            log_event(log, "reload ignored: no config file", logging.WARNING, source=source or "-")
            return
        try:
            loaded = load_node_config(source)
        except ConfigError as error:
            log_event(log, "reload failed, config unchanged", logging.ERROR, error=str(error))
            return
        sd_notify.reloading()
        plan = plan_reload(self.config, loaded)
        self.config = plan.config
        if "peers (endpoints)" in plan.applied:
            for peer in plan.config.peers:
                if peer.node_id != self.node_id:
                    self.peers.set_peer(peer.node_id, peer.endpoints)
        log_event(
            log, "config reloaded", config=source, applied=",".join(plan.applied) or "-",
        )  # fmt: skip
        if plan.needs_restart:
            log_event(
                log, "config change needs a restart", logging.WARNING,
                keys=",".join(plan.needs_restart),
            )  # fmt: skip
        restart = ",".join(plan.needs_restart)
        status = f"STATUS=reloaded; needs a restart: {restart}" if restart else "STATUS=reloaded"
        sd_notify.notify("READY=1", status)


async def run_node(
    config: NodeConfig,
    *,
    key: NodeKey | None = None,
    components: tuple[NodeComponent, ...] = (),
) -> int:
    """Run a node until SIGTERM or SIGINT, then drain and stop; the process exit code (0)."""
    loop = asyncio.get_running_loop()
    keep_large_blocks()  # no fresh pages per large read or write batch (ADR 0041)
    runtime = NodeRuntime(config, key=key, components=components)
    check_against_key(config, runtime.node_id)  # ConfigConflict: e.g. [[peers]] names itself
    lock = KeyLock(config.key_path, runtime.node_id)  # KeyInUseError: another node runs it
    stop = asyncio.Event()

    def on_stop_signal() -> None:
        if stop.is_set():  # the second signal: do not wait for the drain
            log_event(log, "second signal, cutting the drain short", logging.WARNING)
            runtime.cut_drain_short()
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in signals[:2]:
        loop.add_signal_handler(signum, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    try:
        await runtime.start()
        freeze_startup_objects()  # full GC passes then skip the start-up heap
        sd_notify.notify("READY=1", f"STATUS=node {runtime.node_id} running")
        await stop.wait()
        log_event(log, "signal received, stopping")
        sd_notify.notify("STOPPING=1", "STATUS=draining")
        await runtime.shutdown()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        lock.release()
    return 0
