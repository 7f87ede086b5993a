"""``DataPlane``: where an OPEN_STREAM goes — refused, relayed, adopted (resume), or served.

The runtime attaches every session (accepted and dialled) with :meth:`DataPlane.attach`;
the data plane then sees each session event synchronously, before any ACK leaves:

* Access (:mod:`.access`, default deny): every stream this node would serve — a direct
  OPEN_STREAM (no route lease; the opener is the session's peer) and the destination of
  a route lease (fresh or RESUME; the opener is the lease's source, ``hops[0]``) — is
  checked here, the one place, before anything else serves it.  A refusal resets it with
  ``ACCESS_DENIED``, is counted in ``refused`` (``access denied``) and in
  ``access.refused``, and logs ``access denied`` at most once per 10 s per (peer,
  service) with the count of lines suppressed.  Openers' node records are learned from
  HELLO (SessionReady) and from sealed opens' key exchanges.

* OPEN_STREAM with a route lease: the lease is checked (:mod:`.lease_check`); a refusal
  resets the stream with ``ROUTE_REJECTED`` and logs ``route lease refused`` with the
  reason.  An inner hop is handed to the :class:`~accessfabric.node.relaying.relay.Relay`; the
  destination serves the stream as a :class:`ResumableStream`, kept by resume token.
  When the OPEN_STREAM carries a sealing key exchange, the handler gets a
  :class:`~accessfabric.node.streams.sealed_stream.SealedStream` over it (plaintext in and out;
  the sealing survives resumes, it sits above the resumable end).  A relayed open
  (the lease has hops between source and destination) without one is refused
  (``REFUSED_STREAM``, counted as ``unsealed relayed stream``): docs/sealing.md.  An
  open already gone from its session (OPEN_STREAM and RESET_STREAM in one batch) is
  skipped: nothing raises into the session's event callback.
* OPEN_STREAM with RESUME at the destination adopts the kept stream end: from its
  snapshot when its session died, or by taking it over (the old hop stream is reset with
  ``ROUTE_REJECTED``) when the old path still looks alive.  A token this node never saw,
  resumed from offset 0 (the source received nothing from here), names a stream whose
  first path failed before reaching the destination: it is served as a new stream (an
  empty snapshot is adopted, the source resends from byte 0; a sealed one must carry its
  original key exchange after a proof made with the resume key that exchange gives; a
  proof without it is refused, never served unsealed).
  Other unknown tokens, and tokens of stream ends already let go (remembered for twice
  the resume window and until the last lease that carried the stream here expires), are
  reset; so is a fresh OPEN_STREAM naming a stream served here before (``stream
  replayed``): a sealed open and its records, sent again by a relay, would derive the
  same keys.  A sealed stream (its first OPEN_STREAM carried a sealing key exchange) is
  adopted only with a fresh resume proof made with its resume key
  (:mod:`accessfabric.sealing.resume_proof`): a relay knows the token, not the key.  A
  missing, invalid or replayed proof is reset with ``AUTHENTICATION_FAILED``, logged
  (``resume refused``) and counted in ``refused``; the kept stream end is not touched.
* ``refused`` counts refusals by label (a reason's text before ``:``); at most
  ``REFUSED_LABELS`` distinct labels, later new ones count as ``other``: it is exported
  as ``accessfabric_streams_refused_total{reason}``.
* Every other event goes to the relay (ACK forwarding) and the route manager (failover
  triggers at the source).

:meth:`DataPlane.incoming` tells the runtime what to dispatch for an accepted stream:
nothing (claimed), the sealed or resumable wrapper, or the plain stream (no route lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.control.kernel.fence import FenceBook
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.rejections import LeaseRejected
from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.relaying.relay import Relay
from accessfabric.node.relaying.relay_limits import RelayLimits
from accessfabric.node.routing.lease_check import LeaseChecker
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.node.streams.connection import (
    FabricStream,
    HopStream,
    SessionConnection,
    termination_error,
)
from accessfabric.node.streams.resumable import (
    DEFAULT_RESUME_WINDOW,
    ResumableStream,
    session_stream,
)
from accessfabric.node.streams.sealed_stream import SealedStream
from accessfabric.node.streams.stream_sealing import SealingKeys, relayed
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog
from accessfabric.sealing import SealingError
from accessfabric.sealing.handshake import (
    destination_resume_key,
    is_sealing_key_exchange,
    parse_key_exchange,
    stream_context,
)
from accessfabric.sealing.resume_proof import ResumeRefused, split_resume_field, verify_resume
from accessfabric.session import events as ev
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.session.stream_state import StreamState

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
REFUSED_LABELS = 16
REFUSED_LABEL_LENGTH = 48
ACCESS_LOG_INTERVAL = 10.0
"""Seconds between two ``access denied`` lines for one (peer, service)."""
OPEN_MAX_AGE = 60.0
"""Seconds a sealed open (v2: it states when it was made, bound into its keys) stays
acceptable; a served stream's token is remembered at least this long plus the skew."""
OPEN_CLOCK_SKEW = 5.0
"""How far ahead of this node's clock an opener's may be (the lease check allows 5 s)."""
RETIRED_LIMIT = 65536
"""Resume tokens of let-go stream ends remembered at most (each for 2 resume windows, and
until the last route lease that carried the stream here expires)."""

EventHook = Callable[[SessionConnection, ev.Event], None]


class DataPlane:
    def __init__(
        self,
        node_id: str,
        peers: PeerSessionManager,
        authority_key: bytes | None,
        *,
        relay_limits: RelayLimits | None = None,
        resume_window: float = DEFAULT_RESUME_WINDOW,
        sealing_key: X25519PrivateKey | None = None,
        sealing_keys: SealingKeys | None = None,
        access: ServiceAccess | None = None,
        fences: FenceBook | None = None,
    ) -> None:
        """``sealing_key``: this node's static X25519 key, to open sealed streams and bind
        their resumes (without it sealed opens are refused, resumes are token-only);
        ``sealing_keys``: the other nodes' sealing keys (a sealed stream's opener);
        ``access``: who may open which service here (None: nobody)."""
        self.node_id = node_id
        self.access = access if access is not None else ServiceAccess(node_id, {}, authority_key)
        self._access_log = RateLimitedLog(log, interval=ACCESS_LOG_INTERVAL)
        self.sealing_key = sealing_key
        self.sealing_keys = sealing_keys if sealing_keys is not None else SealingKeys()
        self.sealed = 0
        """Sealed streams served here (the handler read and wrote plaintext)."""
        self.checker = LeaseChecker(node_id, authority_key, fences=fences)
        self.relay = Relay(peers, relay_limits, orphan_grace=resume_window)
        self.resume_window = resume_window
        self.hooks: list[EventHook] = []
        """More per-event hooks (the route manager at a source adds one)."""
        self._claimed: weakref.WeakSet[HopStream] = weakref.WeakSet()
        self._wrapped: weakref.WeakKeyDictionary[HopStream, FabricStream] = (
            weakref.WeakKeyDictionary()
        )
        self.served: dict[bytes, ResumableStream] = {}
        """Destination stream ends by resume token, while they may still be resumed."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.relay_gate: Callable[[], str | None] | None = None
        """Why this node relays no new stream now, or None (node/host/host_monitor.py)."""
        self.refused: dict[str, int] = {}
        self.on_refused: Callable[[SessionConnection, str, str, str], None] | None = None
        """Told of each refusal (connection, reason, service, kind) instead of an unlimited
        log line: the node's admission logs at a bounded rate (per peer and kind, e.g.
        ``resume refused: resume proof missing``) and limits the peer."""
        self.adopted = 0
        self.opened_on_resume = 0
        self._retired: OrderedDict[bytes, float] = OrderedDict()
        """Tokens of stream ends let go, with until when they are remembered: a resume or a
        fresh open of one is refused (a replay), never taken for a stream whose first path
        failed."""
        self._lease_ends: dict[bytes, float] = {}
        """Served tokens -> when (monotonic) the last route lease that carried an open or
        resume of the stream here expires: until then a relay could replay it."""

    # ------------------------------------------------------------ wiring

    def attach(self, connection: SessionConnection) -> None:
        connection.on_event.append(lambda event: self._on_event(connection, event))
        task = asyncio.create_task(self._watch(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    def incoming(self, stream: HopStream) -> FabricStream | None:
        """What the runtime dispatches for an accepted stream (None: claimed here)."""
        if stream in self._claimed:
            return None
        return self._wrapped.get(stream, stream)

    async def _watch(self, connection: SessionConnection) -> None:
        ended = await connection.wait_closed()
        error = termination_error(ended)
        for wrapper in list(self.served.values()):
            if wrapper.connection is connection and not wrapper.finished:
                wrapper.mark_broken(error)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for token, wrapper in list(self.served.items()):
                state = wrapper.connection.session.stream_state(wrapper.stream_id)
                done = state is None or state in (StreamState.CLOSED, StreamState.RESET)
                if wrapper.broken_since is not None:
                    if now - wrapper.broken_since > self.resume_window:
                        wrapper.fail(ConnectionError(f"not resumed: {wrapper.broken_reason}"))
                        self._retire(token, now)
                elif wrapper.finished or done:
                    self._retire(token, now)
            self.forget_retired(now)

    def forget_retired(self, now: float) -> None:
        """Forget let-go tokens whose time is up, and the oldest beyond RETIRED_LIMIT.

        Tokens are kept in the order they were let go, but their remember-until times
        are not ordered (each depends on its lease): past half the limit, expired ones
        hiding behind a long-lived first entry are found by a scan, so the limit only
        ever evicts tokens that still count when there really are that many."""
        retired = self._retired
        while retired and next(iter(retired.values())) < now:
            retired.popitem(last=False)
        if len(retired) > RETIRED_LIMIT // 2:
            for token in [token for token, until in retired.items() if until < now]:
                del retired[token]
        while len(retired) > RETIRED_LIMIT:
            retired.popitem(last=False)

    @property
    def retired_tokens(self) -> frozenset[bytes]:
        """Tokens of let-go stream ends still remembered (their opens are refused)."""
        return frozenset(self._retired)

    def _retire(self, token: bytes, now: float) -> None:
        del self.served[token]
        lease_end = self._lease_ends.pop(token, now)
        self._retired[token] = max(now + 2 * self.resume_window, lease_end)
        self._retired.move_to_end(token)

    def _carried_by(self, token: bytes, lease: RouteLease) -> None:
        """Remember that ``lease`` carried an open or resume of stream ``token`` here: until
        it expires, a relay on it could send that open again (a replay)."""
        lease_end = time.monotonic() + max(0.0, lease.expires_ms / 1000 - time.time())
        self._lease_ends[token] = max(self._lease_ends.get(token, 0.0), lease_end)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.relay.aclose()

    # ------------------------------------------------------------ events

    def _on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        if type(event) is ev.StreamOpened:
            assert isinstance(event, ev.StreamOpened)
            if event.route_lease:
                self._routed_open(connection, event)
            else:
                self._direct_open(connection, event)
        else:
            if type(event) is ev.SessionReady:
                assert isinstance(event, ev.SessionReady)
                self.access.learn_record(event.peer_node_record, event.peer_node_id)
            self.relay.on_event(connection, event)
        for hook in self.hooks:
            hook(connection, event)

    def _refuse(
        self,
        connection: SessionConnection,
        stream: HopStream,
        code: ErrorCode,
        reason: str,
        message: str = "resume refused",
    ) -> None:
        """Reset ``stream`` with ``code``, count ``reason``'s label, log ``message``."""
        self._claimed.add(stream)
        self._count_refused(reason)
        with contextlib.suppress(LocalProtocolError):
            stream.reset(code)
        if self.on_refused is not None:
            label = reason.split(":", 1)[0].strip()[:REFUSED_LABEL_LENGTH]
            self.on_refused(
                connection, f"{message}: {reason}", stream.service, f"{message}: {label}"
            )
            return
        log_event(
            log, message, logging.WARNING, peer=_peer(connection), stream=stream.stream_id,
            service=stream.service, code=code.name, reason=reason,
        )  # fmt: skip

    def _direct_open(self, connection: SessionConnection, event: ev.StreamOpened) -> None:
        """A stream with no route lease: served here, so its opener is the session's peer."""
        stream = connection.stream(event.stream_id)
        if stream is not None:
            self._authorise(connection, stream, _peer(connection), event)

    def _authorise(
        self,
        connection: SessionConnection,
        stream: HopStream,
        opener: str,
        event: ev.StreamOpened,
    ) -> bool:
        """Whether ``opener`` may have ``stream`` served here; refused (reset with
        ``ACCESS_DENIED``, counted, logged at a bounded rate) when not."""
        why = self.access.refusal(opener, event.service, event.traffic_class)
        if why is None:
            self.access.served += 1
            return True
        self._claimed.add(stream)
        self._count_refused(f"access denied: {why}")
        self.access.refused += 1
        with contextlib.suppress(LocalProtocolError):
            stream.reset(ErrorCode.ACCESS_DENIED)
        self._access_log.log(
            (opener, event.service), logging.WARNING,
            "access denied peer=%s service=%s class=%s via=%s reason=%s",
            opener, event.service, event.traffic_class.name.lower(),
            _peer(connection), json.dumps(why), now=time.monotonic(),
        )  # fmt: skip
        return False

    def _learn_opener(self, event: ev.StreamOpened, opener: str) -> None:
        """The node record a sealed open carries (its opener's, signed by the authority)."""
        key_exchange = event.key_exchange
        if event.resume:
            _proof, key_exchange = split_resume_field(key_exchange)
        parsed = parse_key_exchange(key_exchange)
        if parsed is not None and parsed.opener_record:
            self.access.learn_record(parsed.opener_record, opener)

    def _count_refused(self, reason: str) -> None:
        label = reason.split(":", 1)[0].strip()[:REFUSED_LABEL_LENGTH] or "other"
        if label not in self.refused and len(self.refused) >= REFUSED_LABELS:
            label = "other"  # a bounded label set, whatever the reasons say
        self.refused[label] = self.refused.get(label, 0) + 1

    def _routed_open(self, connection: SessionConnection, event: ev.StreamOpened) -> None:
        stream = connection.stream(event.stream_id)
        if stream is None:
            return
        try:
            checked = self.checker.check(
                event.route_lease,
                peer_id=_peer(connection),
                service=event.service,
                traffic_class=event.traffic_class,
                route_id=event.route_id,
            )
        except LeaseRejected as rejected:
            self._refuse(
                connection, stream, ErrorCode.ROUTE_REJECTED, str(rejected), "route lease refused"
            )
            return
        if not checked.is_destination:
            paused = self.relay_gate() if self.relay_gate is not None else None
            if paused is not None:  # a mobile-edge node that may not relay now
                self._refuse(connection, stream, ErrorCode.REFUSED_STREAM, paused, "relay refused")
                return
            self._claimed.add(stream)
            self.relay.open(connection, event, checked, stream)
            return
        opener = checked.lease.hops[0]
        self._learn_opener(event, opener)
        if not self._authorise(connection, stream, opener, event):
            return
        if event.resume:
            self._adopt(connection, event, stream, checked.lease)
            return
        if connection.session.stream_state(event.stream_id) is None:
            self._claimed.add(stream)  # opened and reset in one batch: nothing to serve
            return
        admitted = self._admit(connection, event, stream, checked.lease, event.key_exchange)
        if admitted is None:
            return
        kept = self.served.get(event.resume_token)
        if kept is not None and _alive(kept):  # a fresh open must not replace a live stream
            self._refuse(
                connection, stream, ErrorCode.STREAM_CLOSED,
                "resume token in use: a fresh stream names a live one", "stream refused",
            )  # fmt: skip
            return
        if kept is not None or event.resume_token in self._retired:
            # the same open and records derive the same keys again: never serve them twice
            self._refuse(
                connection, stream, ErrorCode.STREAM_CLOSED,
                "stream replayed: a fresh stream names one already served here",
                "stream refused",
            )  # fmt: skip
            return
        self._serve(connection, event, stream, event.key_exchange, admitted, checked.lease)

    def _admit(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        stream: HopStream,
        lease: RouteLease,
        key_exchange: bytes,
    ) -> bytes | None:
        """The sealing policy for a stream to serve here (docs/sealing.md): its resume key
        (b"" unsealed), or None when it was refused."""
        sealed = is_sealing_key_exchange(key_exchange)
        if not sealed and relayed(lease):
            self._refuse(
                connection, stream, ErrorCode.REFUSED_STREAM,
                "unsealed relayed stream: a stream through a relay must be sealed to its "
                "destination", "stream refused",
            )  # fmt: skip
            return None
        if not sealed:
            return b""
        if self.sealing_key is None:
            self._refuse(
                connection, stream, ErrorCode.REFUSED_STREAM,
                "sealing unavailable: this node has no sealing key", "stream refused",
            )  # fmt: skip
            return None
        parsed = parse_key_exchange(key_exchange)
        if parsed is not None and parsed.opener_node_id != lease.hops[0]:
            # The lease lets its source reach this service; a hop on its path (the previous
            # hop passes the lease check) must not reuse it for streams of its own.
            self._refuse(
                connection, stream, ErrorCode.AUTHENTICATION_FAILED,
                f"sealed opener not the route's source: {parsed.opener_node_id[:12]}... "
                "opened a stream "
                f"on a lease for {lease.hops[0][:12]}...", "stream refused",
            )  # fmt: skip
            return None
        if parsed is not None and parsed.opened_ms is not None:
            age = self.checker.clock() - parsed.opened_ms / 1000
            if not -OPEN_CLOCK_SKEW <= age <= OPEN_MAX_AGE:
                # Served tokens are remembered at least this long (``_serve``): an open
                # any older could be a recorded one whose token is forgotten (a replay).
                self._refuse(
                    connection, stream, ErrorCode.STREAM_CLOSED,
                    f"stale sealed open: made {age:.0f} s ago (a replay, or the opener's "
                    f"clock is off by more than {OPEN_CLOCK_SKEW:g} s)", "stream refused",
                )  # fmt: skip
                return None
        context = stream_context(event.service, event.resume_token)
        try:
            return destination_resume_key(self.sealing_key, key_exchange, context) or b""
        except SealingError as error:  # a retired version, an unknown suite, a message 1
            # that does not verify (altered on the way, or made for another stream)
            self._refuse(
                connection, stream, ErrorCode.AUTHENTICATION_FAILED,
                f"sealing: {error}", "stream refused",
            )  # fmt: skip
            return None

    def _serve(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        stream: HopStream,
        key_exchange: bytes,
        resume_key: bytes,
        lease: RouteLease,
    ) -> ResumableStream:
        """Serve the stream here: a resumable end kept by its resume token; the handler
        gets plaintext (a :class:`SealedStream` over it) when it is sealed."""
        wrapper = ResumableStream(
            stream,
            session_stream(connection, event.stream_id),
            event.resume_token,
            resume_window=self.resume_window,
        )
        wrapper.key_exchange = key_exchange
        wrapper.resume_key = resume_key
        self.served[event.resume_token] = wrapper
        self._carried_by(event.resume_token, lease)
        # remembered while its open could still pass the freshness check (``_admit``)
        fresh_until = time.monotonic() + OPEN_MAX_AGE + OPEN_CLOCK_SKEW
        self._lease_ends[event.resume_token] = max(
            self._lease_ends.get(event.resume_token, 0.0), fresh_until
        )
        if resume_key and self.sealing_key is not None:  # sealed
            parsed = parse_key_exchange(key_exchange)
            if parsed is not None and parsed.opener_record:  # the opener sent its signed record:
                # an authority-signed key is safe to learn whoever sends it; only the holder
                # of the matching private key completes the handshake (docs/sealing.md)
                self.sealing_keys.learn_record(parsed.opener_record)
            self._wrapped[stream] = SealedStream.destination(
                wrapper, self.sealing_key, key_exchange, self.sealing_keys.resolve,
                on_refused=self._count_refused,
            )  # fmt: skip
            self.sealed += 1
        else:
            self._wrapped[stream] = wrapper
        return wrapper

    def _first_path_failed(self, event: ev.StreamOpened) -> bool:
        """A resume of a stream this node never saw, from offset 0 (see the module doc)."""
        token = event.resume_token
        return event.start_offset == 0 and token not in self.served and token not in self._retired

    def _open_resumed(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        stream: HopStream,
        lease: RouteLease,
    ) -> None:
        """Serve a stream whose first path never reached here (see the module doc)."""
        proof, key_exchange = split_resume_field(event.key_exchange)
        if proof and not is_sealing_key_exchange(key_exchange):
            # a proof names a sealed stream: served without its exchange it would go
            # unsealed (one hop) and the service would read its sealed records as plaintext
            self._refuse(
                connection, stream, ErrorCode.STREAM_CLOSED,
                "resume key exchange missing: a sealed stream cannot be served anew without it",
            )  # fmt: skip
            return
        resume_key = self._admit(connection, event, stream, lease, key_exchange)
        if resume_key is None:
            return
        counter = 0
        if resume_key:  # sealed: the proof shows the opener holds the exchange's secret
            checked = self._check_proof(connection, stream, event, resume_key, proof, 0)
            if checked is None:
                return
            counter = checked
        empty = StreamSnapshot(
            resume_token=event.resume_token, service=event.service,
            traffic_class=event.traffic_class, send_acked=0, send_buffer=(), send_end=False,
            recv_offset=0, recv_consumed=0, recv_ended=False,
        )  # fmt: skip
        try:
            connection.session.adopt_stream(event.stream_id, empty, 0)
        except LocalProtocolError as error:
            self._refuse(connection, stream, ErrorCode.STREAM_CLOSED, f"cannot open: {error}")
            return
        connection.schedule_flush()
        wrapper = self._serve(connection, event, stream, key_exchange, resume_key, lease)
        wrapper.resume_counter = counter
        self.opened_on_resume += 1
        log_event(
            log, "stream opened on its second path", peer=_peer(connection),
            service=event.service, stream=event.stream_id, sealed=bool(resume_key),
        )  # fmt: skip

    def _check_proof(
        self,
        connection: SessionConnection,
        stream: HopStream,
        event: ev.StreamOpened,
        resume_key: bytes,
        proof: bytes,
        last_counter: int,
    ) -> int | None:
        """The proof's counter, or None when it was refused (``AUTHENTICATION_FAILED``)."""
        try:
            return verify_resume(
                resume_key, proof, last_counter=last_counter, token=event.resume_token,
                service=event.service, route_id=event.route_id,
                route_lease=event.route_lease, start_offset=event.start_offset,
            )  # fmt: skip
        except ResumeRefused as refused:
            self._refuse(connection, stream, ErrorCode.AUTHENTICATION_FAILED, str(refused))
            return None

    def _adopt(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        stream: HopStream,
        lease: RouteLease,
    ) -> None:
        wrapper = self.served.get(event.resume_token)
        if wrapper is None and self._first_path_failed(event):
            self._open_resumed(connection, event, stream, lease)
            return
        if wrapper is None or wrapper.finished or wrapper.service != event.service:
            self._refuse(connection, stream, ErrorCode.STREAM_CLOSED, "unknown resume token")
            return
        self._claimed.add(stream)
        if not wrapper.resume_key and relayed(lease):
            self._refuse(
                connection, stream, ErrorCode.REFUSED_STREAM,
                "unsealed relayed stream: an unsealed stream cannot resume through a relay",
            )  # fmt: skip
            return
        counter = wrapper.resume_counter
        if wrapper.resume_key:  # sealed: only the two ends hold the key (docs/sealing.md)
            proof, _original = split_resume_field(event.key_exchange)
            checked = self._check_proof(
                connection, stream, event, wrapper.resume_key, proof, wrapper.resume_counter
            )
            if checked is None:
                return
            counter = checked
        old_conn, old_id = wrapper.connection, wrapper.stream_id
        taken_over = not wrapper.broken and not old_conn.is_closed
        snapshot = wrapper.snapshot()
        try:
            connection.session.adopt_stream(event.stream_id, snapshot, event.start_offset)
        except LocalProtocolError as error:
            self._refuse(connection, stream, ErrorCode.STREAM_CLOSED, f"cannot adopt: {error}")
            return
        if taken_over:
            with contextlib.suppress(LocalProtocolError):
                old_conn.session.reset_stream(old_id, ErrorCode.ROUTE_REJECTED)
                old_conn.schedule_flush()
        wrapper.resume_counter = counter
        self._carried_by(event.resume_token, lease)
        wrapper.rebind(stream, session_stream(connection, event.stream_id))
        connection.schedule_flush()
        self.adopted += 1
        log_event(
            log, "stream resumed", peer=_peer(connection), service=event.service,
            offset_in=snapshot.recv_offset, offset_out=event.start_offset,
            taken_over=taken_over,
        )  # fmt: skip


def _alive(wrapper: ResumableStream) -> bool:
    """The stream end still runs or waits to be resumed."""
    if wrapper.finished:
        return False
    if wrapper.broken:
        return True
    state = wrapper.connection.session.stream_state(wrapper.stream_id)
    return state is not None and state not in (StreamState.CLOSED, StreamState.RESET)


def _peer(connection: SessionConnection) -> str:
    return connection.session.peer_node_id or "?"
