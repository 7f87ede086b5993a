"""Timers: the handshake deadline, keepalive PINGs and their timeout, the idle timeout,
the lapse of peer pressure assumed from an earlier session, and a look back at data the
pacer held (bytes in flight may turn out stuck).

``get_timer()`` says when the session next wants ``handle_timer(now)``; the
carrier arms one timer for it.  A DRAINING session with no active stream wants
it at once, to end.
"""

from __future__ import annotations

from accessfabric.errors import ErrorCode
from accessfabric.session import events as ev
from accessfabric.session.core import SessionCore
from accessfabric.session.session_state import SessionState
from accessfabric.session.stream_state import ACTIVE_STATES
from accessfabric.wire import frames as fr


class Timers(SessionCore):
    """When the session wants to be woken, and what it does when it is."""

    __slots__ = ()

    def get_timer(self) -> float | None:
        """When the session next wants ``handle_timer`` (None: never)."""
        if self.state is SessionState.CLOSED:
            return None
        cfg = self.config
        deadlines: list[float] = []
        if self.state is SessionState.DRAINING and not any(
            s.state in ACTIVE_STATES for s in self._streams.values()
        ):
            return self._now
        if self.state in (SessionState.READY, SessionState.DRAINING):
            if cfg.keepalive_interval is not None and self._keepalive_ping is None:
                deadlines.append(self._last_receive + cfg.keepalive_interval)
            if self._keepalive_ping is not None and cfg.ping_timeout is not None:
                deadlines.append(
                    self._pings.get(self._keepalive_ping, self._now) + cfg.ping_timeout
                )
            if cfg.idle_timeout is not None and self._idle_since is not None:
                deadlines.append(self._idle_since + cfg.idle_timeout)
            if self._paced_wake is not None:
                deadlines.append(self._paced_wake)
            if self._assumed_until is not None:
                deadlines.append(self._assumed_until)
        elif cfg.handshake_timeout is not None:
            deadlines.append(self._started + cfg.handshake_timeout)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[ev.Event]:
        """Run whatever timers are due at ``now``."""
        self._now = now
        events: list[ev.Event] = []
        if self.state is SessionState.CLOSED:
            return events
        cfg = self.config
        if self._paced_wake is not None and now >= self._paced_wake:
            self._paced_wake = None  # the carrier's next data_to_send looks again
        if self.state not in (SessionState.READY, SessionState.DRAINING):
            if cfg.handshake_timeout is not None and now >= self._started + cfg.handshake_timeout:
                self._send_goaway(ErrorCode.TIMEOUT, "handshake timed out")
                self._terminate(
                    ErrorCode.TIMEOUT, "handshake timed out", remote=False, events=events
                )
            return events
        self._lapse_assumed_pressure(now)
        if self._keepalive_ping is not None and cfg.ping_timeout is not None:
            sent = self._pings.get(self._keepalive_ping, now)
            if now >= sent + cfg.ping_timeout:
                reason = f"peer did not answer a PING for {cfg.ping_timeout:g} s"
                self._send_goaway(ErrorCode.TIMEOUT, reason)
                self._terminate(ErrorCode.TIMEOUT, reason, remote=False, events=events)
                return events
        elif (
            cfg.keepalive_interval is not None
            and now >= self._last_receive + cfg.keepalive_interval
        ):
            opaque = self._random_u64()
            self._pings[opaque] = now
            self._keepalive_ping = opaque
            self._control.append(fr.Ping(opaque).to_bytes())
        if (
            cfg.idle_timeout is not None
            and self._idle_since is not None
            and now >= self._idle_since + cfg.idle_timeout
            and self.state is SessionState.READY
        ):
            self._send_goaway(ErrorCode.NO_ERROR, "idle")
            self._terminate(ErrorCode.NO_ERROR, "idle", remote=False, events=events)
        self._check_drained(events)
        return events
