"""Output: what ``data_to_send`` puts on the wire, and in which order.

Pending ACKs are queued first, then control frames go out in the order they
were queued, then stream data: urgent classes by strict priority, the shared
ones by the :class:`ClassScheduler`'s weighted shares and, when pacing is on,
only as fast as the :class:`DelayPacer` allows and, while the peer reports cpu or
memory pressure, the :class:`PressureRateCap`.  Every DATA frame is cut here
(``_emit``), against the stream's and the session's credit (the shared classes
leave ``urgent_session_reserve`` of the latter to the urgent ones, ADR 0014); a
stream refused for want of session credit counts a stall; NODE_PRESSURE tells
the peer when our send queues cross the high mark and when they recover.
"""

from __future__ import annotations

from accessfabric.session.core import PRESSURE_HIGH, SessionCore
from accessfabric.session.scheduler import SHARED_CLASSES
from accessfabric.session.session_state import SessionState
from accessfabric.session.stream import Stream
from accessfabric.session.stream_state import StreamInput
from accessfabric.wire import frames as fr
from accessfabric.wire.frames import pack_data_header
from accessfabric.wire.limits import MAX_U32
from accessfabric.wire.registry import TrafficClass

_MIN_PACED_FRAME = 1024
_DATA_HEADER = fr.DATA_HEADER.size
_TIMING_MARK_BYTES = 32 * 1024
"""Sent data is time-stamped once per this many bytes; its ACK gives an RTT sample."""
_STUCK_AFTER = 0.05
"""Unacknowledged for this long (or 4 x srtt), bytes no longer count as in flight."""
_PARK_CHECK_INTERVAL = 0.01
_EMPTY = memoryview(b"")
_SHARED = frozenset(SHARED_CLASSES)
_INTERACTIVE = TrafficClass.INTERACTIVE


class Output(SessionCore):
    """Draining the session's queues into bytes for the carrier."""

    __slots__ = ()

    def _flush_acks(self) -> None:
        control = self._control
        for stream in self._ack_pending:
            if stream.relayed:
                continue
            recv = stream.recv
            window = min(MAX_U32, max(0, recv.limit - recv.received))
            control.append(fr.Ack(stream.stream_id, recv.received, window).to_bytes())
        self._ack_pending.clear()

    def data_to_send(self, max_bytes: int | None = None, *, now: float) -> bytes:
        """Bytes for the carrier at ``now``: control frames first, then stream data by class.

        ``max_bytes`` lets the carrier take only what its socket can absorb now,
        so queues form here, where priority applies.  At least one frame is
        returned when anything is queued, even if it is larger than ``max_bytes``.
        ``now`` is the carrier's clock, the one ``receive_data`` and ``handle_timer``
        get: the pacer, RTT marks and stall times read it.
        """
        self._now = now
        budget = (1 << 62) if max_bytes is None else max_bytes
        if self._ack_pending:
            # ACKs go out when the carrier asks, not when bytes arrive: one per stream per
            # write, and the application can still mark a new stream relayed in between.
            self._flush_acks()
        parts: list[bytes | memoryview] = []
        control = self._control
        if control:
            taken = 0
            for frame in control:
                size = len(frame)
                if size > budget and parts:
                    break
                parts.append(frame)
                budget -= size
                taken += 1
            del control[:taken]
        if self.state in (SessionState.READY, SessionState.DRAINING):
            # Stream data only once every control frame is out: a stream's OPEN_STREAM
            # (queued there) must precede its DATA, whatever the carrier's budget.
            if not control and (budget > 0 or not parts):
                budget = self._send_stream_data(parts, budget)
            self._pressure_checks += 1
            if self._pressure_checks % 32 == 0:
                self._signal_queue_pressure(parts)
        if not parts:
            return b""
        return b"".join(parts)

    def _send_stream_data(self, parts: list[bytes | memoryview], budget: int) -> int:
        scheduler = self._scheduler
        pacer = self._pacer
        cap = self._pressure_cap
        now = self._now
        streams = self._streams
        emit = self._emit
        max_payload = self.peer_max_frame_size - _DATA_HEADER + fr.HEADER.size
        while budget > _DATA_HEADER or not parts:  # at least one frame, as promised
            pick = scheduler.next_urgent()
            paced = capped = False
            if pick is None:
                if cap is not None and cap.available(now) < _MIN_PACED_FRAME:
                    if scheduler.has_shared():  # the peer is pressured: look again then
                        wake = now + cap.wait(_MIN_PACED_FRAME)
                        old = self._paced_wake
                        self._paced_wake = wake if old is None or old <= now else min(old, wake)
                    break
                capped = cap is not None and cap.rate is not None
                if pacer is not None and pacer.limiting(now):
                    tokens = pacer.available(now)
                    if tokens < _MIN_PACED_FRAME and self._park_stuck_streams(now):
                        tokens = pacer.available(now)
                    if tokens < _MIN_PACED_FRAME:
                        if scheduler.has_shared():  # look again, should no ACK come
                            self._paced_wake = now + self._stuck_after()
                        break
                    paced = True
                pick = scheduler.next_shared()
                if pick is None:
                    break
            stream_id, traffic_class = pick
            stream = streams[stream_id]
            shared = traffic_class in _SHARED
            # A stream keeps the turn for as many frames as the scheduler allows it.
            allowance = scheduler.allowance(traffic_class)
            charged = 0
            while True:
                limit = budget - _DATA_HEADER
                if limit < 1:
                    limit = 1
                if paced:
                    assert pacer is not None
                    tokens = int(pacer.available(now))
                    if tokens < limit:
                        limit = tokens
                if capped:
                    assert cap is not None
                    tokens = int(cap.available(now))
                    if tokens < limit:
                        limit = tokens
                sent = emit(stream, parts, limit if limit < max_payload else max_payload)
                if sent < 0:
                    break  # session credit exhausted
                cost = sent + _DATA_HEADER
                budget -= cost
                charged += cost
                if shared:
                    if pacer is not None:
                        pacer.consume(sent)
                    if cap is not None:
                        cap.consume(sent, now)
                elif traffic_class is _INTERACTIVE:
                    if cap is not None:
                        cap.on_interactive(now)
                    if pacer is not None:
                        pacer.on_interactive(now)
                if (
                    charged >= allowance
                    or budget <= _DATA_HEADER
                    or not stream.wants_to_send
                    or (paced and pacer is not None and pacer.available(now) < _MIN_PACED_FRAME)
                    or (capped and cap is not None and cap.available(now) < _MIN_PACED_FRAME)
                ):
                    break
            ready = stream.wants_to_send
            if sent < 0 and ready:
                # cut short by session credit: it keeps its place and goes first when
                # credit returns (rotated, a stream left with the crumbs would starve)
                scheduler.charge_in_place(traffic_class, charged)
            else:
                scheduler.charge(stream_id, traffic_class, charged, ready)
                if not ready:
                    self._after_send(stream)
            if sent < 0:
                blocked = SHARED_CLASSES if shared else TrafficClass
                waiting = [streams[i] for i in scheduler.ready_ids(blocked)]
                self._session_credit_stall(stream, waiting)
                break
        return budget

    def _emit(self, stream: Stream, parts: list[bytes | memoryview], limit: int) -> int:
        """Cut one DATA frame of at most ``limit`` bytes from the stream; -1 if blocked."""
        n = 0
        payload = _EMPTY
        if stream.queued:
            session_credit = self._session_credit_limit - self._session_sent
            if stream.traffic_class in _SHARED:
                session_credit -= self._urgent_reserve  # left for the urgent classes
            if session_credit <= 0:
                return -1
            n = stream.queued
            credit = stream.credit_limit - stream.send_offset
            if limit < n:
                n = limit
            if credit < n:
                n = credit
            if session_credit < n:
                n = session_credit
            if n <= 0:
                return 0
            queue = stream.send_queue
            head = queue[0]
            while not head:  # an empty chunk carries nothing; never let it pose as the end
                queue.popleft()
                head = queue[0]
            if n >= len(head):
                n = len(head)
                queue.popleft()
                payload = head
            else:
                payload = head[:n]
                queue[0] = head[n:]
            stream.queued -= n
        end = stream.end_queued and not stream.queued
        if n == 0 and not end:
            return 0  # a stale scheduler entry (an ACK skipped what was queued): nothing to say
        offset = stream.send_offset
        if n == 0:  # only the end is left to say
            parts.append(fr.CloseStream(stream.stream_id, offset).to_bytes())
        else:
            sent_to = offset + n
            parts.append(pack_data_header((n + 8) << 8, end, stream.stream_id, offset))
            parts.append(payload)
            stream.retained.append((offset, payload))
            stream.send_offset = sent_to
            self._session_sent += n
            timing = stream.timing
            if not timing or sent_to - timing[-1][0] >= _TIMING_MARK_BYTES:
                timing.append((sent_to, self._now))
        stream.bytes_out += n
        stream.frames_out += 1
        if end:
            stream.end_sent = True
            stream.local_transition(StreamInput.SEND_END)
            self._maybe_forget(stream)
        return n

    def _stuck_after(self) -> float:
        return max(4 * (self._rtt.srtt or 0.0), _STUCK_AFTER)

    def _park_stuck_streams(self, now: float) -> bool:
        """Stop counting in the pacer's bytes in flight those no ACK has covered for long.

        A stream relayed onward is acknowledged end to end: bytes the next hop holds
        for a reader that stopped stay unacknowledged here, although they left this
        hop's path long ago.  Counted as in flight they would fill the pacer's window
        and hold back every shared-class stream of the session (issue 13).  A stream
        that got no ACK for ``4 x srtt`` (at least ``_STUCK_AFTER``) and whose oldest
        unacknowledged bytes are as old has nothing in a queue the pacer can drain:
        its bytes stop counting, and an ACK that covers them later frees nothing
        twice.  A stream that flows gets ACKs every round trip and is never parked.
        """
        if now - self._last_park_check < _PARK_CHECK_INTERVAL:
            return False
        self._last_park_check = now
        assert self._pacer is not None
        stuck_after = self._stuck_after()
        parked = 0
        for stream in self._streams.values():
            in_flight = stream.paced_in_flight
            if not in_flight or stream.traffic_class not in _SHARED:
                continue
            # Stuck: no ACK for that long, and its oldest unacknowledged mark is that old
            # (with no mark left, the bytes predate the last ACK).
            last_ack = stream.ack_seen_at
            oldest = stream.timing[0][1] if stream.timing else last_ack
            if oldest is None:
                continue
            if now - max(oldest, last_ack or oldest) >= stuck_after:
                stream.paced_from = stream.send_offset
                parked += in_flight
        if parked:
            self._pacer.forget(parked)
            self.pacer_parked_bytes += parked
        return parked > 0

    def _signal_queue_pressure(self, parts: list[bytes | memoryview]) -> None:
        """Send NODE_PRESSURE when our send queues cross the high mark, and when they recover."""
        level = min(100, 100 * self.queued_bytes() // max(1, self.config.pressure_queue_bytes))
        high = level >= PRESSURE_HIGH
        if high != self._pressure_high:
            self._pressure_high = high
            parts.append(fr.NodePressure(level, *self.host_levels).to_bytes())

    def _after_send(self, stream: Stream) -> None:
        if stream.queued and stream.stall_since is None:
            stream.credit_stalls += 1
            self.credit_stalls += 1
            stream.stall_since = self._now

    def queued_bytes(self) -> int:
        """Stream bytes queued and not yet sent, over all streams."""
        return sum(s.queued for s in self._streams.values())
