"""``StreamRouter``: the one place an incoming OPEN_STREAM is decided.

The data plane hands it every ``StreamOpened`` synchronously, before any ACK leaves, and
it decides exactly once what becomes of the stream (:class:`Decision`):

* **refused** — reset here: the access policy (default deny), the route lease check, the
  sealing policy, a replayed or stale open, a resume without a valid proof, a relay gate;
* **relayed** — an inner hop of its route lease: spliced to the next hop (``Relay``);
* **adopted** — a RESUME of a stream end served here: the kept end continues on it;
* **served** — a routed stream whose destination is this node (fresh, or resumed from
  offset 0 after its first path failed): a :class:`ResumableStream` kept by resume token
  (``ServedEnds``), under a :class:`SealedStream` when sealed;
* **direct** — no route lease, its opener is the session's peer and access allows it:
  the plain hop stream;
* **gone** — opened and reset in one batch: nothing to serve.

:meth:`StreamRouter.incoming` then gives the runtime what to dispatch to the service
dispatcher (``echo`` and the node's services) for an accepted stream: the served or
direct stream, or None.  The rules behind each refusal are the module docstring of
:mod:`.dataplane` and docs/sealing.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.rejections import LeaseRejected
from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.relaying.relay import Relay
from accessfabric.node.routing.lease_check import LeaseChecker
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.node.serving.served_ends import ServedEnds
from accessfabric.node.streams.connection import FabricStream, HopStream, SessionConnection
from accessfabric.node.streams.resumable import ResumableStream, session_stream
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

REFUSED_LABELS = 16
REFUSED_LABEL_LENGTH = 48
ACCESS_LOG_INTERVAL = 10.0
"""Seconds between two ``access denied`` lines for one (peer, service)."""
OPEN_MAX_AGE = 60.0
"""Seconds a sealed open (v2: it states when it was made, bound into its keys) stays
acceptable; a served stream's token is remembered at least this long plus the skew."""
OPEN_CLOCK_SKEW = 5.0
"""How far ahead of this node's clock an opener's may be (the lease check allows 5 s)."""


class Decision(Enum):
    """What became of an incoming OPEN_STREAM."""

    REFUSED = "refused"
    RELAYED = "relayed"
    ADOPTED = "adopted"
    SERVED = "served"
    DIRECT = "direct"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Routed:
    decision: Decision
    dispatch: FabricStream | None = None
    """What the service dispatcher gets (a served stream's wrapper), None: nothing or,
    for a direct stream, the hop stream itself."""


class StreamRouter:
    def __init__(
        self,
        node_id: str,
        access: ServiceAccess,
        checker: LeaseChecker,
        relay: Relay,
        ends: ServedEnds,
        *,
        sealing_key: X25519PrivateKey | None = None,
        sealing_keys: SealingKeys | None = None,
    ) -> None:
        """``sealing_key``: this node's static X25519 key, to open sealed streams and bind
        their resumes (without it sealed opens are refused, resumes are token-only);
        ``sealing_keys``: the other nodes' sealing keys (a sealed stream's opener);
        ``access``: who may open which service here."""
        self.node_id = node_id
        self.access = access
        self._access_log = RateLimitedLog(log, interval=ACCESS_LOG_INTERVAL)
        self.checker = checker
        self.relay = relay
        self.ends = ends
        self.sealing_key = sealing_key
        self.sealing_keys = sealing_keys if sealing_keys is not None else SealingKeys()
        self.sealed = 0
        """Sealed streams served here (the handler read and wrote plaintext)."""
        self.relay_gate: Callable[[], str | None] | None = None
        """Why this node relays no new stream now, or None (node/host/host_monitor.py)."""
        self.refused: dict[str, int] = {}
        """Refusals by label (a reason's text before ``:``), at most ``REFUSED_LABELS``
        labels (later new ones count as ``other``): ``accessfabric_streams_refused_total``."""
        self.on_refused: Callable[[SessionConnection, str, str, str], None] | None = None
        """Told of each refusal (connection, reason, service, kind) instead of an unlimited
        log line: the node's admission logs at a bounded rate (per peer and kind, e.g.
        ``resume refused: resume proof missing``) and limits the peer."""
        self.adopted = 0
        self.opened_on_resume = 0
        self._decisions: weakref.WeakKeyDictionary[HopStream, Routed] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------ the decision

    def route(self, connection: SessionConnection, event: ev.StreamOpened) -> None:
        """Decide what becomes of the stream ``event`` opened (once, synchronously)."""
        if event.route_lease:
            self._routed_open(connection, event)
        else:
            self._direct_open(connection, event)

    def incoming(self, stream: HopStream) -> FabricStream | None:
        """What the runtime dispatches for an accepted stream (None: nothing)."""
        routed = self._decisions.pop(stream, None)
        if routed is None or routed.decision is Decision.DIRECT:
            return stream
        return routed.dispatch

    def _decide(
        self, stream: HopStream, decision: Decision, dispatch: FabricStream | None = None
    ) -> None:
        self._decisions[stream] = Routed(decision, dispatch)

    def _refuse(
        self,
        connection: SessionConnection,
        stream: HopStream,
        code: ErrorCode,
        reason: str,
        message: str = "resume refused",
    ) -> None:
        """Reset ``stream`` with ``code``, count ``reason``'s label, log ``message``."""
        self._decide(stream, Decision.REFUSED)
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
        if stream is not None and self._authorise(connection, stream, _peer(connection), event):
            self._decide(stream, Decision.DIRECT)

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
        self._decide(stream, Decision.REFUSED)
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
            self._decide(stream, Decision.RELAYED)
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
            self._decide(stream, Decision.GONE)  # opened and reset in one batch
            return
        admitted = self._admit(connection, event, stream, checked.lease, event.key_exchange)
        if admitted is None:
            return
        kept = self.ends.served.get(event.resume_token)
        if kept is not None and _alive(kept):  # a fresh open must not replace a live stream
            self._refuse(
                connection, stream, ErrorCode.STREAM_CLOSED,
                "resume token in use: a fresh stream names a live one", "stream refused",
            )  # fmt: skip
            return
        if kept is not None or self.ends.is_retired(event.resume_token):
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
            resume_window=self.ends.resume_window,
        )
        wrapper.key_exchange = key_exchange
        wrapper.resume_key = resume_key
        self.ends.served[event.resume_token] = wrapper
        self.ends.carried_by(event.resume_token, lease)
        # remembered while its open could still pass the freshness check (``_admit``)
        fresh_until = time.monotonic() + OPEN_MAX_AGE + OPEN_CLOCK_SKEW
        self.ends.remember_until(event.resume_token, fresh_until)
        if resume_key and self.sealing_key is not None:  # sealed
            parsed = parse_key_exchange(key_exchange)
            if parsed is not None and parsed.opener_record:  # the opener sent its signed record:
                # an authority-signed key is safe to learn whoever sends it; only the holder
                # of the matching private key completes the handshake (docs/sealing.md)
                self.sealing_keys.learn_record(parsed.opener_record)
            sealed = SealedStream.destination(
                wrapper, self.sealing_key, key_exchange, self.sealing_keys.resolve,
                on_refused=self._count_refused,
            )  # fmt: skip
            self._decide(stream, Decision.SERVED, sealed)
            self.sealed += 1
        else:
            self._decide(stream, Decision.SERVED, wrapper)
        return wrapper

    def _first_path_failed(self, event: ev.StreamOpened) -> bool:
        """A resume of a stream this node never saw, from offset 0 (see the module doc)."""
        token = event.resume_token
        return (
            event.start_offset == 0
            and token not in self.ends.served
            and not self.ends.is_retired(token)
        )

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
        wrapper = self.ends.served.get(event.resume_token)
        if wrapper is None and self._first_path_failed(event):
            self._open_resumed(connection, event, stream, lease)
            return
        if wrapper is None or wrapper.finished or wrapper.service != event.service:
            self._refuse(connection, stream, ErrorCode.STREAM_CLOSED, "unknown resume token")
            return
        self._decide(stream, Decision.ADOPTED)
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
        self.ends.carried_by(event.resume_token, lease)
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
