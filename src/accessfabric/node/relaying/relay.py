"""The relay role: splice a routed stream from the previous hop onto the next one.

An OPEN_STREAM whose route lease names this node as an inner hop (checked by
:class:`~accessfabric.node.routing.lease_check.LeaseChecker`) is *claimed* here instead of
going to a service:

* both hop streams are marked ``relay_stream``: the sessions stop acknowledging them,
  and every ACK that arrives on one side is forwarded to the other with ``send_ack``
  (``StreamAcknowledged`` -> ``send_ack``), so acknowledgements stay end to end and a
  sender never drops bytes only this relay held;
* DATA is copied in order both ways; the offsets line up because each hop stream starts
  at 0 (or, on a resume, at the offset the far end reports);
* credit is per hop: an upstream byte is consumed (and so re-credited) only when it is
  read to be written downstream, and the next read waits for the downstream session to
  accept the bytes (``drain``): backpressure propagates, the relay buffers at most one
  hop window plus one send buffer per stream;
* the end and resets propagate both ways.  A reset from the source with
  ``ROUTE_REJECTED`` ("this path is abandoned") and a lost upstream session do *not*
  reset the destination: its end waits to be taken over by the resumed stream on another
  path; the leftover downstream half is reset after ``orphan_grace`` seconds.  A lost
  downstream session resets the upstream with ``ROUTE_REJECTED``: the source resumes on
  an alternate route.

A resumed stream (OPEN_STREAM with RESUME) is resumed downstream first, with the
source's resume proof passed on unchanged (docs/sealing.md); the far end's
first ACK says where the stream stands, and the upstream half is then adopted from
there.  The relay never holds a payload byte beyond its hop buffers and never reads one:
sealed payloads are opaque to it (docs/sealing.md).

A stream already gone from its session when the relay comes to it (an OPEN_STREAM and
its RESET_STREAM in one batch; a resume whose source gave up while the far end answered)
is skipped and counted (``gone``); whatever half exists on the other hop is dropped
after ``orphan_grace``.  Nothing one stream does raises into the session's event
callback: that would end the session and every other stream on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.relaying.relay_fairness import TenantFairShare
from accessfabric.node.relaying.relay_limits import RelayLimits, RelayQuotas, RelayRefused
from accessfabric.node.routing.lease_check import CheckedLease
from accessfabric.node.streams.connection import HopStream, SessionConnection, StreamResetError
from accessfabric.node.streams.resumable import StreamErrors, new_fabric_stream
from accessfabric.observe.log_format import log_event
from accessfabric.session import events as ev
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.timeouts import cancel_and_wait, wait_within

log = logging.getLogger(__name__)

RELAY_CHUNK = 256 * 1024
RESUME_POSITION_TIMEOUT = 5.0
ORPHAN_GRACE = 30.0


class _Ended:
    """A finished splice as late ACKs need it: both hops' connection and stream id.  The
    splice itself (both ``HopStream`` ends with their buffers, events and futures) is let go
    when it ends: kept ``orphan_grace`` + 1 s it was ~4 KiB per stream an entry relayed
    in the last 31 s (ADR 0050)."""

    __slots__ = ("down_conn", "down_id", "up_conn", "up_id")

    def __init__(self, splice: Splice) -> None:
        self.up_conn = splice.up_conn
        self.up_id = splice.up_id
        self.down_conn = splice.down_conn
        self.down_id = None if splice.down is None else splice.down.stream_id

    def other(self, connection: SessionConnection) -> tuple[SessionConnection | None, int | None]:
        if connection is self.up_conn:
            return self.down_conn, self.down_id
        return self.up_conn, self.up_id


@dataclass(eq=False)
class Splice:
    tenant: str
    event: ev.StreamOpened
    checked: CheckedLease
    up_conn: SessionConnection
    up: HopStream
    down_conn: SessionConnection | None = None
    down: HopStream | None = None
    position: asyncio.Future[int] | None = None
    started: float = field(default_factory=time.monotonic)
    done: bool = False

    @property
    def up_id(self) -> int:
        return self.event.stream_id


class Relay:
    def __init__(
        self,
        peers: PeerSessionManager,
        limits: RelayLimits | None = None,
        *,
        orphan_grace: float = ORPHAN_GRACE,
    ) -> None:
        self.peers = peers
        self.quotas = RelayQuotas(limits)
        self.fairness: TenantFairShare | None = TenantFairShare()
        """Equal relay shares per tenant, not per stream (node/relaying/relay_fairness.py)."""
        self.orphan_grace = orphan_grace
        self._ends: dict[tuple[SessionConnection, int], Splice | _Ended] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.active = 0
        self.gone = 0
        """Streams skipped because their session no longer had them."""
        self.callback_errors = 0
        """Unexpected errors caught before they reached a session's event callback."""

    # ------------------------------------------------------------ opening (sync, on_event)

    def open(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        checked: CheckedLease,
        up: HopStream,
    ) -> None:
        """Claim the stream (before any ACK for it leaves) and start splicing it."""
        try:
            self._claim(connection, event, checked, up)
        except Exception:  # one stream's problem must not end the session (see above)
            self.callback_errors += 1
            log.exception("relay could not claim stream %d", event.stream_id)
            _reset(up, ErrorCode.ROUTE_REJECTED)

    def _claim(
        self,
        connection: SessionConnection,
        event: ev.StreamOpened,
        checked: CheckedLease,
        up: HopStream,
    ) -> None:
        if connection.session.stream_state(event.stream_id) is None:
            self._skip_gone(event, "opened and gone in one batch")
            return
        tenant = checked.lease.tenant  # signed by the control plane, checked before this
        try:
            self.quotas.admit(tenant, event.traffic_class, resume=event.resume)
        except RelayRefused as refused:
            _reset(up, refused.code)
            log_event(
                log, "relay refused", logging.WARNING, tenant=tenant,
                service=event.service, traffic_class=event.traffic_class.name.lower(),
                reason=str(refused),
            )  # fmt: skip
            return
        splice = Splice(tenant, event, checked, connection, up)
        try:
            self._start(splice)
        except BaseException:
            self._unclaim(splice)  # the admitted slot is not held by a splice that never ran
            raise

    def _start(self, splice: Splice) -> None:
        # a tenant's streams share one send turn per session (relay_fairness.py)
        splice.up_conn.session.relay_stream(splice.up_id, group=splice.tenant)
        self._ends[(splice.up_conn, splice.up_id)] = splice
        self.active += 1
        run = self._run(splice)
        try:
            task = asyncio.create_task(run)
        except BaseException:
            run.close()  # never started: no "never awaited" warning, no finally to run
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unclaim(self, splice: Splice) -> None:
        """Undo :meth:`_start` as far as it got, and give the quota slot back."""
        key = (splice.up_conn, splice.up_id)
        if self._ends.get(key) is splice:
            del self._ends[key]
            self.active -= 1
        self.quotas.release(splice.tenant, splice.event.traffic_class)

    def _skip_gone(self, event: ev.StreamOpened, why: str) -> None:
        self.gone += 1
        log_event(
            log, "relay stream gone", logging.INFO, stream=event.stream_id,
            service=event.service, resume=event.resume, why=why,
        )  # fmt: skip

    def on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        """ACKs of relayed streams go to the other hop; a resume learns its position."""
        try:
            self._on_event(connection, event)
        except Exception:  # one stream's problem must not end the session (see above)
            self.callback_errors += 1
            log.exception("relay could not handle %s", type(event).__name__)

    def _on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        if type(event) is ev.StreamAcknowledged:
            assert isinstance(event, ev.StreamAcknowledged)
            splice = self._ends.get((connection, event.stream_id))
            if splice is None:
                return
            if type(splice) is _Ended:
                target, stream_id = splice.other(connection)
                _send_ack(target, stream_id, event.offset)
                return
            assert isinstance(splice, Splice)
            position = splice.position
            if position is not None and connection is splice.down_conn and not position.done():
                position.set_result(event.offset)
                return
            self._forward_ack(splice, connection, event.offset)
        elif type(event) is ev.StreamReset:
            assert isinstance(event, ev.StreamReset)
            splice = self._ends.get((connection, event.stream_id))
            if not isinstance(splice, Splice):
                return
            position = splice.position
            refused = splice is not None and connection is splice.down_conn
            if refused and position is not None and not position.done():  # a refused resume
                position.set_exception(ResumeRefusedDownstream(event.error_code))
        elif type(event) is ev.CreditGranted:
            assert isinstance(event, ev.CreditGranted)
            splice = self._ends.get((connection, event.stream_id))
            if not isinstance(splice, Splice):
                return
            if splice.position is not None and not splice.position.done():
                # An adopting far end that had nothing (offset 0) sends no ACK beyond 0.
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, self._position_from_state, splice)

    def _position_from_state(self, splice: Splice) -> None:
        if splice.position is None or splice.position.done() or splice.down is None:
            return
        assert splice.down_conn is not None
        state = splice.down_conn.session.stream_progress(splice.down.stream_id)
        if state is not None:
            splice.position.set_result(state.acked)

    def _forward_ack(self, splice: Splice, connection: SessionConnection, offset: int) -> None:
        if connection is splice.up_conn:
            target, stream = splice.down_conn, splice.down
        else:
            target, stream = splice.up_conn, splice.up
        _send_ack(target, None if stream is None else stream.stream_id, offset)

    # ------------------------------------------------------------ splicing

    async def _run(self, splice: Splice) -> None:
        event, checked = splice.event, splice.checked
        try:
            try:
                await self._open_downstream(splice)
            except UpstreamGone:
                self._skip_gone(event, "the source gave up while the next hop answered")
                self._orphan(splice.down)
                return
            except Exception as error:
                self._orphan(splice.down)
                # a far end that refused the resume gets its answer through at once (the
                # source must not take it for a dead path); anything else: this path failed
                code = error.code if isinstance(error, ResumeRefusedDownstream) else None
                _reset(splice.up, code if code is not None else ErrorCode.ROUTE_REJECTED)
                log_event(
                    log, "relay next hop failed", logging.WARNING,
                    next_hop=checked.next_hop, route=checked.lease.route_id,
                    resume=event.resume, error=str(error) or type(error).__name__,
                )  # fmt: skip
                return
            assert splice.down is not None
            log_event(
                log, "relay stream", logging.DEBUG, route=checked.lease.route_id,
                next_hop=checked.next_hop, resume=event.resume,
                traffic_class=event.traffic_class.name.lower(),
            )  # fmt: skip
            await asyncio.gather(
                self._pump(splice, splice.up, splice.down, upstream=True),
                self._pump(splice, splice.down, splice.up, upstream=False),
            )
        finally:
            splice.done = True
            self.active -= 1
            self.quotas.release(splice.tenant, event.traffic_class)
            self._forget_later(splice)

    async def _open_downstream(self, splice: Splice) -> None:
        event, checked = splice.event, splice.checked
        down_conn = await self.peers.session(checked.next_hop)
        if splice.up.error is not None:
            raise ConnectionError("the upstream hop went away while dialling")
        session = down_conn.session
        splice.down_conn = down_conn
        if not event.resume:
            down_id = session.open_stream(
                event.service,
                event.traffic_class,
                event.route_id,
                key_exchange=event.key_exchange,
                route_lease=event.route_lease,
                resume_token=event.resume_token,
            )
            session.relay_stream(down_id, group=splice.tenant)
            splice.down = new_fabric_stream(down_conn, down_id, event.service, event.traffic_class)
            self._ends[(down_conn, down_id)] = splice
            return
        # Resume: the far end says where the stream stands, then the near end adopts it.
        start = event.start_offset
        down_snapshot = StreamSnapshot(
            resume_token=event.resume_token,
            service=event.service,
            traffic_class=event.traffic_class,
            send_acked=0,
            send_buffer=(),
            send_end=False,
            recv_offset=start,
            recv_consumed=start,
            recv_ended=False,
        )
        splice.position = asyncio.get_running_loop().create_future()
        down_id = session.resume_stream(
            down_snapshot,
            event.route_id,
            route_lease=checked.blob,
            key_exchange=event.key_exchange,  # the source's resume proof, passed on as is
        )
        session.relay_stream(down_id, group=splice.tenant)
        splice.down = new_fabric_stream(down_conn, down_id, event.service, event.traffic_class)
        self._ends[(down_conn, down_id)] = splice
        position = await wait_within(asyncio.shield(splice.position), RESUME_POSITION_TIMEOUT)
        up_snapshot = StreamSnapshot(
            resume_token=event.resume_token,
            service=event.service,
            traffic_class=event.traffic_class,
            send_acked=start,
            send_buffer=(),
            send_end=False,
            recv_offset=position,
            recv_consumed=position,
            recv_ended=False,
        )
        up_session = splice.up_conn.session
        if up_session.stream_state(event.stream_id) is None:
            raise UpstreamGone
        up_session.adopt_stream(event.stream_id, up_snapshot, start)
        up_session.relay_stream(event.stream_id, group=splice.tenant)
        splice.up_conn.schedule_flush()

    async def _pump(
        self, splice: Splice, src: HopStream, dst: HopStream, *, upstream: bool
    ) -> None:
        quotas, tenant, cls = self.quotas, splice.tenant, splice.event.traffic_class
        chunk = min(RELAY_CHUNK, quotas.chunk_limit(tenant, cls))
        while True:
            try:
                data = await src.read(chunk)
            except StreamErrors as error:
                self._source_failed(splice, upstream, error)
                return
            if not data:
                with contextlib.suppress(*StreamErrors, LocalProtocolError):
                    dst.close()
                return
            if self.fairness is not None:
                await self.fairness.turn(tenant, len(data))
            try:
                await quotas.spend(tenant, cls, len(data), upstream=upstream)
            except RelayRefused as refused:  # the tenant's relay-bytes quota: end it here
                self._quota_reset(splice, refused)
                return
            try:
                dst.write(data)
                await dst.drain()
            except StreamErrors:
                return  # the other pump sees the failure when it reads

    def _quota_reset(self, splice: Splice, refused: RelayRefused) -> None:
        """A tenant quota ends a relayed stream: reset both ends with its code."""
        for end in (splice.up, splice.down):
            if end is not None:
                _reset(end, refused.code)
        log_event(
            log, "relay refused", logging.WARNING, tenant=splice.tenant,
            service=splice.event.service, route=splice.checked.lease.route_id,
            reason=str(refused),
        )  # fmt: skip

    def _source_failed(self, splice: Splice, upstream: bool, error: BaseException) -> None:
        """The side ``src`` failed; tell (or spare) the other side."""
        other = splice.down if upstream else splice.up
        if other is None or other.error is not None:
            return
        remote_reset = isinstance(error, StreamResetError) and error.remote
        code = error.code if isinstance(error, StreamResetError) else ErrorCode.ROUTE_REJECTED
        if upstream:
            if remote_reset and code != ErrorCode.ROUTE_REJECTED:
                _reset(other, code)
                return
            # The source abandoned this path or its hop died: the destination's end waits
            # for the resumed stream; drop our half only if nobody took it over.
            log_event(
                log, "relay upstream lost", logging.INFO, route=splice.checked.lease.route_id,
                error=str(error) or type(error).__name__,
            )  # fmt: skip
            self._orphan(other)
            return
        if not remote_reset:
            log_event(
                log, "relay next hop lost", logging.WARNING,
                route=splice.checked.lease.route_id, next_hop=splice.checked.next_hop,
                error=str(error) or type(error).__name__,
            )  # fmt: skip
            code = ErrorCode.ROUTE_REJECTED
        _reset(other, code)

    def _orphan(self, stream: HopStream | None) -> None:
        """Drop a downstream half after ``orphan_grace`` unless a resume took it over."""
        if stream is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(self.orphan_grace, _reset, stream, ErrorCode.CANCEL)

    def _forget_later(self, splice: Splice) -> None:
        """Keep forwarding late ACKs for a while (by stream id: the splice goes now), then
        forget the stream ids."""
        ended = _Ended(splice)
        keys = [(ended.up_conn, ended.up_id)]
        if ended.down_conn is not None and ended.down_id is not None:
            keys.append((ended.down_conn, ended.down_id))
        for key in keys:
            if self._ends.get(key) is splice:
                self._ends[key] = ended

        def forget() -> None:
            for key in keys:
                if self._ends.get(key) is ended:
                    del self._ends[key]

        asyncio.get_running_loop().call_later(self.orphan_grace + 1.0, forget)

    def counters(self) -> dict[str, object]:
        return {
            "active": self.active,
            "gone": self.gone,
            "callback_errors": self.callback_errors,
            **self.quotas.counters(),
        }

    async def aclose(self) -> None:
        await cancel_and_wait(self._tasks)


class UpstreamGone(Exception):
    """The upstream half of a resume left its session before it could be adopted."""


class ResumeRefusedDownstream(Exception):
    """The next hop reset a resumed stream before telling its position."""

    def __init__(self, code: ErrorCode | int) -> None:
        super().__init__(f"the next hop refused the resume ({_code_name(code)})")
        self.code = code


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)


def _send_ack(target: SessionConnection | None, stream_id: int | None, offset: int) -> None:
    if target is None or stream_id is None or target.is_closed:
        return
    with contextlib.suppress(LocalProtocolError):
        target.session.send_ack(stream_id, offset)
        target.schedule_flush()


def _reset(stream: HopStream, code: ErrorCode | int) -> None:
    if stream.error is not None:
        return
    with contextlib.suppress(LocalProtocolError):
        stream.reset(code if isinstance(code, ErrorCode) else ErrorCode.CANCEL)
