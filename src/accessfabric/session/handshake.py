"""The handshake: HELLO, AUTH, SESSION_READY.

Each side sends HELLO (versions, node id, key, nonce), signs the transcript of
both HELLOs bound to the carrier's channel in its AUTH, and after checking the
peer's AUTH sends SESSION_READY with its limits.  The session is READY once the
peer's SESSION_READY arrives.
"""

from __future__ import annotations

from accessfabric.errors import AuthenticationError, ProtocolError, UnsupportedVersionError
from accessfabric.session import events as ev
from accessfabric.session.auth import auth_transcript, signed_message
from accessfabric.session.core import SessionCore
from accessfabric.session.session_state import SessionInput
from accessfabric.wire import frames as fr
from accessfabric.wire.limits import DEFAULT_MAX_FRAME_SIZE


class Handshake(SessionCore):
    """The handshake's frame handlers (AWAIT_HELLO -> AWAIT_AUTH -> AWAIT_READY -> READY)."""

    __slots__ = ()

    def _on_hello(self, frame: fr.Hello, events: list[ev.Event]) -> None:
        common = set(frame.versions) & set(self.config.versions)
        if not common:
            theirs, ours = list(frame.versions), list(self.config.versions)
            raise UnsupportedVersionError(f"peer speaks versions {theirs}, we speak {ours}")
        self.version = max(common)
        self.peer_node_id = frame.node_id
        self.peer_public_key = frame.public_key
        self._peer_node_record = frame.node_record
        peer_hello = frame.to_bytes()
        if self.dialer:
            self._transcript = auth_transcript(self._local_hello, peer_hello, self._channel_binding)
        else:
            self._transcript = auth_transcript(peer_hello, self._local_hello, self._channel_binding)
        signature = self._auth.sign(signed_message(self._transcript, self.dialer))
        self._control.append(fr.Auth(signature).to_bytes())
        self._enter(SessionInput.RECV_HELLO)

    def _on_auth(self, frame: fr.Auth, events: list[ev.Event]) -> None:
        assert self.peer_node_id is not None and self.peer_public_key is not None
        try:
            self._auth.verify(
                self.peer_node_id,
                self.peer_public_key,
                self._peer_node_record,
                signed_message(self._transcript, not self.dialer),
                frame.signature,
            )
        except ProtocolError:
            raise
        except Exception as error:  # a verifier bug must not look like a peer's success
            raise AuthenticationError(f"verifying the peer's AUTH failed: {error}") from error
        cfg = self.config
        self._control.append(
            fr.SessionReady(
                self.version,
                cfg.max_frame_size,
                cfg.initial_stream_window,
                cfg.initial_session_window,
                cfg.max_concurrent_streams,
                cfg.route_epoch,
                cfg.peer_epoch,
            ).to_bytes()
        )
        self._decoder.set_max_frame_size(max(cfg.max_frame_size, DEFAULT_MAX_FRAME_SIZE))
        self._enter(SessionInput.RECV_AUTH)

    def _on_session_ready(self, frame: fr.SessionReady, events: list[ev.Event]) -> None:
        if frame.version != self.version:
            raise UnsupportedVersionError(
                f"peer confirmed version {frame.version}, negotiated {self.version}"
            )
        self.peer_max_frame_size = frame.max_frame_size
        self.peer_max_concurrent_streams = frame.max_concurrent_streams
        self._peer_stream_window = frame.initial_stream_window
        self._session_credit_limit = frame.initial_session_window
        self._urgent_reserve = min(
            self.config.urgent_session_reserve, frame.initial_session_window // 4
        )
        self._scheduler.quantum = min(frame.max_frame_size, DEFAULT_MAX_FRAME_SIZE)
        self._enter(SessionInput.RECV_READY)
        # One PING right away: the receive windows need an RTT to grow toward bandwidth x RTT
        # even on a side that only receives (it gets no ACK-timed samples).
        self._rtt_probe = self._random_u64()
        self._pings[self._rtt_probe] = self._now
        self._control.append(fr.Ping(self._rtt_probe).to_bytes())
        assert self.peer_node_id is not None and self.peer_public_key is not None
        events.append(
            ev.SessionReady(
                peer_node_id=self.peer_node_id,
                peer_public_key=self.peer_public_key,
                peer_node_record=self._peer_node_record,
                version=self.version,
                peer_max_frame_size=frame.max_frame_size,
                peer_max_concurrent_streams=frame.max_concurrent_streams,
                route_epoch=frame.route_epoch,
                peer_epoch=frame.peer_epoch,
            )
        )
