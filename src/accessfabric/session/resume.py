"""Streams that move between sessions: snapshots out, resumed streams in.

``export_stream`` saves a stream's state from its last ACK.  One side reopens
the stream on another session with ``Session.resume_stream`` (OPEN_STREAM with
RESUME); the other side hands the stream it sees reopened its own saved state
with ``adopt_stream``.  Both rebuild the stream from a :class:`StreamSnapshot`
and tell the peer where they stand.
"""

from __future__ import annotations

from accessfabric.errors import LocalProtocolError
from accessfabric.session.core import SessionCore
from accessfabric.session.flow import ReceiveWindow
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.session.stream import Stream
from accessfabric.session.stream_state import StreamInput, StreamState
from accessfabric.wire import frames as fr
from accessfabric.wire.limits import MAX_U32


class Resume(SessionCore):
    """Exporting a stream's state, and rebuilding a stream from it on another session."""

    __slots__ = ()

    def export_stream(self, stream_id: int) -> StreamSnapshot:
        """The stream's state, to continue it on another session from the last ACK."""
        stream = self._local_stream(stream_id)
        return StreamSnapshot(
            resume_token=stream.resume_token,
            service=stream.service,
            traffic_class=stream.traffic_class,
            send_acked=stream.acked,
            send_buffer=stream.pending_from_ack(),
            send_end=stream.end_queued,
            recv_offset=stream.recv.received,
            recv_consumed=stream.recv.consumed,
            recv_ended=stream.recv_end is not None,
        )

    def adopt_stream(self, stream_id: int, snapshot: StreamSnapshot, start_offset: int) -> None:
        """Give a stream the peer resumed (``StreamOpened.resume``) its saved state.

        ``start_offset`` is the offset from :class:`StreamOpened`: how far the
        peer received our bytes.
        """
        old = self._local_stream(stream_id)
        if old.local or old.resume_token != snapshot.resume_token:
            raise LocalProtocolError(f"stream {stream_id} is not the resumed stream of snapshot")
        if not snapshot.send_acked <= start_offset <= snapshot.send_acked + snapshot.send_pending:
            raise LocalProtocolError(
                f"peer resumes from {start_offset}, outside what we kept "
                f"({snapshot.send_acked}..{snapshot.send_acked + snapshot.send_pending})"
            )
        stream = self._stream_from_snapshot(stream_id, snapshot, local=False)
        stream.local_transition(StreamInput.RECV_OPEN)  # the peer's OPEN_STREAM with RESUME
        stream.credit_limit = max(stream.credit_limit, old.credit_limit)
        stream.skip_to(start_offset)
        self._streams[stream_id] = stream
        self._announce_resumed(stream, snapshot, ack=True)

    def _stream_from_snapshot(self, stream_id: int, snap: StreamSnapshot, *, local: bool) -> Stream:
        cfg = self.config
        window = ReceiveWindow(cfg.initial_stream_window, cfg.max_stream_window, snap.recv_offset)
        window.consumed = snap.recv_consumed
        window.limit = snap.recv_consumed + window.window
        stream = Stream(
            stream_id,
            snap.service,
            snap.traffic_class,
            snap.resume_token,
            local,
            window,
            credit_limit=snap.send_acked,  # no credit until the peer grants it
            send_offset=snap.send_acked,
        )
        for chunk in snap.send_buffer:
            if chunk:
                stream.send_queue.append(chunk)
                stream.queued += len(chunk)
        stream.end_queued = snap.send_end
        if snap.recv_ended:
            stream.recv_end = snap.recv_offset
        return stream

    def _announce_resumed(self, stream: Stream, snapshot: StreamSnapshot, *, ack: bool) -> None:
        """Give the peer credit from where we are (and, when adopting, say how far we got).

        The resuming side's OPEN_STREAM already carries how far it received
        (``start_offset``); the adopting side answers with an ACK.
        """
        stream.resumed = True
        recv = stream.recv
        if snapshot.recv_ended:
            # the peer's end arrived on the old session: received, as far as the table goes
            if stream.state is StreamState.OPEN:
                stream.local_transition(StreamInput.RECV_END)
        else:
            self._control.append(fr.StreamCredit(stream.stream_id, recv.limit).to_bytes())
        if ack:
            window = min(MAX_U32, max(0, recv.limit - recv.received))
            self._control.append(fr.Ack(stream.stream_id, recv.received, window).to_bytes())
        self._after_queue(stream)
