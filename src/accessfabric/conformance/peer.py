"""A scripted fabric peer: a real TLS 1.3 connection driven frame by frame.

It does the handshake itself (not with :class:`~accessfabric.session.Session`) so a
check can break any step, and it reads the peer's frames with its own
:class:`~accessfabric.wire.FrameDecoder`.  While a check waits for something it
answers PINGs (the peer sends one right after SESSION_READY), and, unless told
otherwise, acknowledges and re-grants credit for the stream bytes it receives.  Bytes it
sends with :meth:`ScriptedPeer.write` respect the peer's stream and session credit: what
does not fit waits for the peer's STREAM_CREDIT (checks that mean to overrun credit build
their frames by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from accessfabric.errors import AuthenticationError, ErrorCode, ProtocolError
from accessfabric.identity import Ed25519Authenticator, NodeKey
from accessfabric.identity.tls import client_context, peer_identity_from_ssl_object
from accessfabric.session.auth import auth_transcript, signed_message
from accessfabric.wire import frames as fr
from accessfabric.wire.decoder import FrameDecoder
from accessfabric.wire.registry import PROTOCOL_VERSION, TrafficClass

OUR_WINDOW = 1024 * 1024
OUR_SESSION_WINDOW = 16 * 1024 * 1024


class CheckFailed(Exception):
    """What the peer did differs from what the spec requires (the message says how)."""


class NotApplicable(Exception):
    """The check cannot run against this peer (the message says why): reported as skipped."""


class PeerClosed(CheckFailed):
    """The carrier closed (EOF or reset) while we waited."""


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame's bytes, built by hand (so they may break any rule)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((frame_type, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


@dataclass
class Received:
    """What the peer sent on one stream (bytes in order, its end, its reset)."""

    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    credit: int = 0  # the highest STREAM_CREDIT the peer granted us
    granted: int = OUR_WINDOW  # the credit we granted the peer
    acked: int = 0  # the offset of our last ACK


@dataclass
class Backlog:
    """Bytes :meth:`ScriptedPeer.write` holds until the peer grants credit for them."""

    data: bytearray = field(default_factory=bytearray)
    end: bool = False


@dataclass
class Limits:
    """The SESSION_READY this side sends."""

    max_frame_size: int = 65536
    initial_stream_window: int = OUR_WINDOW
    initial_session_window: int = OUR_SESSION_WINDOW
    max_concurrent_streams: int = 100


class ScriptedPeer:
    """One TLS connection to the peer under test, as the dialer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        key: NodeKey,
        binding: bytes,
        certificate_key: bytes | None,
        timeout: float,
    ) -> None:
        self.reader, self.writer, self.key = reader, writer, key
        self.binding = binding
        self.certificate_key = certificate_key
        self.timeout = timeout
        self.decoder = FrameDecoder()
        self.pending: list[fr.Frame] = []
        self.streams: dict[int, Received] = {}
        self.session_credit = 0
        self.session_received = 0
        self.session_granted = OUR_SESSION_WINDOW
        self.auto_credit = True
        self.manual_credit: set[int] = set()  # streams never re-granted automatically
        self.peer_ready: fr.SessionReady | None = None
        self.peer_hello: fr.Hello | None = None
        self.goaway: fr.Goaway | None = None
        self.closed = False
        self.limits = Limits()
        self.pongs: list[int] = []
        self.sent: dict[int, int] = {}  # stream id -> bytes we sent on it
        self.session_sent = 0
        self.backlog: dict[int, Backlog] = {}  # stream id -> bytes waiting for credit

    # ------------------------------------------------------------ connection

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float) -> ScriptedPeer:
        key = NodeKey.generate()
        with tempfile.TemporaryDirectory(prefix="accessfabric-conformance-") as cert_dir:
            context = client_context(key, Path(cert_dir))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, limit=1 << 20), timeout
        )
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        info = peer_identity_from_ssl_object(ssl_object)
        return cls(reader, writer, key, info.channel_binding, info.public_key_bytes, timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    def send(self, *chunks: bytes) -> None:
        self.writer.write(b"".join(chunks))

    # ------------------------------------------------------------ handshake

    def hello(self, versions: tuple[int, ...] = (PROTOCOL_VERSION,), **change: object) -> bytes:
        self._nonce = os.urandom(32)
        frame = fr.Hello(versions, self.key.node_id, self.key.public_key_bytes, self._nonce)
        for name, value in change.items():
            setattr(frame, name, value)
        self.local_hello = frame.to_bytes()
        return self.local_hello

    def auth_for(self, peer_hello: fr.Hello, *, binding: bytes | None = None) -> bytes:
        transcript = auth_transcript(
            self.local_hello, peer_hello.to_bytes(), self.binding if binding is None else binding
        )
        self._transcript = transcript
        return fr.Auth(self.key.sign(signed_message(transcript, True))).to_bytes()

    def session_ready(self, version: int = PROTOCOL_VERSION) -> bytes:
        lim = self.limits
        return fr.SessionReady(
            version, lim.max_frame_size, lim.initial_stream_window,
            lim.initial_session_window, lim.max_concurrent_streams,
        ).to_bytes()  # fmt: skip

    async def handshake(self, expected_peer_id: str | None = None) -> fr.SessionReady:
        """HELLO, AUTH (checked like a dialer: key, id, certificate), SESSION_READY."""
        self.send(self.hello())
        peer_hello = await self.expect_type(fr.Hello)
        self.peer_hello = peer_hello
        self.send(self.auth_for(peer_hello))
        auth = await self.expect_type(fr.Auth)
        verifier = Ed25519Authenticator(self.key, expected_peer_id=expected_peer_id)
        try:
            verifier.verify(
                peer_hello.node_id, peer_hello.public_key, peer_hello.node_record,
                signed_message(self._transcript, False), auth.signature,
            )  # fmt: skip
        except (AuthenticationError, ProtocolError) as error:
            raise CheckFailed(f"the peer's AUTH does not verify: {error}") from None
        if self.certificate_key != peer_hello.public_key:
            raise CheckFailed("the peer's TLS certificate does not hold the key its AUTH proved")
        self.send(self.session_ready())
        ready = await self.expect_type(fr.SessionReady)
        self.peer_ready = ready
        self.session_credit = ready.initial_session_window
        self.session_granted = self.limits.initial_session_window
        self.decoder.set_max_frame_size(max(self.limits.max_frame_size, 65536))
        return ready

    # ------------------------------------------------------------ reading

    async def next_frame(self, timeout: float | None = None) -> fr.Frame:
        """The next frame that is not a PING (PINGs are answered); PeerClosed at EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            while self.pending:
                frame = self.pending.pop(0)
                if self._observe(frame):
                    return frame
            if self.closed:
                raise PeerClosed("the peer closed the connection")
            self._acknowledge()  # every frame read so far is observed: ACK and re-grant
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), remaining)
            except TimeoutError:
                raise
            except (ConnectionError, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            try:
                self.pending.extend(self.decoder.feed(chunk))
            except ProtocolError as error:
                raise CheckFailed(f"the peer sent a malformed frame: {error}") from None

    def _observe(self, frame: fr.Frame) -> bool:
        """Bookkeeping for every frame; False for those a check never waits for."""
        if isinstance(frame, fr.Ping):
            self.send(fr.Pong(frame.opaque).to_bytes())
            return False
        if isinstance(frame, fr.Pong):
            self.pongs.append(frame.opaque)
        elif isinstance(frame, fr.Goaway):
            self.goaway = frame
        elif isinstance(frame, fr.StreamCredit):
            if frame.stream_id == 0:
                self.session_credit = max(self.session_credit, frame.max_offset)
            else:
                got = self.streams.setdefault(frame.stream_id, Received())
                got.credit = max(got.credit, frame.max_offset)
            self._flush()
        elif isinstance(frame, fr.Data):
            got = self.streams.setdefault(frame.stream_id, Received())
            got.data += frame.payload
            self.session_received += len(frame.payload)
            got.ended = got.ended or frame.end_stream
        elif isinstance(frame, fr.CloseStream):
            self.streams.setdefault(frame.stream_id, Received()).ended = True
        elif isinstance(frame, fr.ResetStream):
            self.streams.setdefault(frame.stream_id, Received()).reset = int(frame.error_code)
            self.backlog.pop(frame.stream_id, None)
        return True

    def _acknowledge(self) -> None:
        """ACK and re-grant what arrived (when ``auto_credit``): a well-behaved receiver."""
        if not self.auto_credit:
            return
        out: list[bytes] = []
        for stream_id, got in self.streams.items():
            size = len(got.data)
            if got.reset is not None or size == got.acked:
                continue
            if stream_id not in self.manual_credit and got.granted - size < OUR_WINDOW // 2:
                got.granted = size + OUR_WINDOW
                out.append(fr.StreamCredit(stream_id, got.granted).to_bytes())
            got.acked = size
            out.append(fr.Ack(stream_id, size, max(0, got.granted - size)).to_bytes())
        if self.session_granted - self.session_received < OUR_SESSION_WINDOW // 2:
            self.session_granted = self.session_received + OUR_SESSION_WINDOW
            out.append(fr.StreamCredit(0, self.session_granted).to_bytes())
        if out:
            self.send(*out)

    async def expect_type(self, kind: type[FrameT]) -> FrameT:
        """Wait for a frame of ``kind``; a GOAWAY, a close or a timeout first fails."""
        try:
            while True:
                frame = await self.next_frame()
                if isinstance(frame, kind):
                    return frame
                if isinstance(frame, fr.Goaway):
                    raise CheckFailed(
                        f"expected {kind.__name__}, got GOAWAY {_code(frame.error_code)}"
                        f" ({frame.reason})"
                    )
        except TimeoutError:
            raise CheckFailed(f"no {kind.__name__} within {self.timeout:g} s") from None

    async def expect_goaway(self, code: ErrorCode) -> str:
        """Wait for GOAWAY with ``code`` (then the peer must end the session)."""
        try:
            while True:
                frame = await self.next_frame()
                if isinstance(frame, fr.Goaway):
                    if frame.error_code != code:
                        raise CheckFailed(
                            f"expected GOAWAY {code.name}, got GOAWAY "
                            f"{_code(frame.error_code)} ({frame.reason})"
                        )
                    return f"GOAWAY {code.name}: {frame.reason}"
        except PeerClosed:
            raise CheckFailed(f"the peer closed without GOAWAY {code.name}") from None
        except TimeoutError:
            raise CheckFailed(f"no GOAWAY {code.name} within {self.timeout:g} s") from None

    async def expect_reset(
        self, stream_id: int, code: ErrorCode, also: tuple[ErrorCode, ...] = ()
    ) -> str:
        """Wait for RESET_STREAM(``code``, or one of ``also``) on ``stream_id``; the session
        must live on."""
        try:
            while True:
                frame = await self.next_frame()
                if isinstance(frame, fr.ResetStream) and frame.stream_id == stream_id:
                    if frame.error_code != code and frame.error_code not in also:
                        raise CheckFailed(
                            f"expected RESET_STREAM {code.name}, got {_code(frame.error_code)}"
                        )
                    code = ErrorCode(frame.error_code)
                    break
                if isinstance(frame, fr.Goaway):
                    raise CheckFailed(
                        f"expected RESET_STREAM {code.name} on stream {stream_id}, got GOAWAY "
                        f"{_code(frame.error_code)} ({frame.reason})"
                    )
        except PeerClosed:
            raise CheckFailed(f"the peer closed instead of RESET_STREAM {code.name}") from None
        except TimeoutError:
            raise CheckFailed(
                f"no RESET_STREAM {code.name} on stream {stream_id} within {self.timeout:g} s"
            ) from None
        await self.expect_alive()
        return f"RESET_STREAM {code.name}, session still up"

    async def expect_alive(self) -> None:
        """A PING round trip: the session is up and has processed all we sent."""
        opaque = int.from_bytes(os.urandom(8), "big")
        self.send(fr.Ping(opaque).to_bytes())
        try:
            while opaque not in self.pongs:
                frame = await self.next_frame()
                if isinstance(frame, fr.Goaway):
                    raise CheckFailed(
                        f"the session ended: GOAWAY {_code(frame.error_code)} ({frame.reason})"
                    )
        except PeerClosed:
            raise CheckFailed("the peer closed the connection") from None
        except TimeoutError:
            raise CheckFailed(f"no PONG within {self.timeout:g} s") from None

    async def expect_closed(self) -> fr.Goaway | None:
        """Wait until the peer closes the carrier; the GOAWAY it sent, if any."""
        try:
            while True:
                await self.next_frame()
        except PeerClosed:
            return self.goaway
        except TimeoutError:
            raise CheckFailed(
                f"the peer did not close the connection within {self.timeout:g} s"
            ) from None

    async def read_stream(self, stream_id: int) -> Received:
        """Wait until the peer ended (or reset) ``stream_id``; what it sent."""
        got = self.streams.setdefault(stream_id, Received())
        try:
            while not got.ended and got.reset is None:
                frame = await self.next_frame()
                if isinstance(frame, fr.Goaway):
                    raise CheckFailed(
                        f"GOAWAY {_code(frame.error_code)} ({frame.reason}) before stream "
                        f"{stream_id} ended"
                    )
        except PeerClosed:
            raise CheckFailed(f"the peer closed before stream {stream_id} ended") from None
        except TimeoutError:
            raise CheckFailed(f"stream {stream_id} did not end within {self.timeout:g} s") from None
        return got

    # ------------------------------------------------------------ writing streams

    def open(self, stream_id: int, service: str = "echo") -> None:
        self.streams[stream_id] = Received(granted=self.limits.initial_stream_window)
        self.send(fr.OpenStream(stream_id, service, TrafficClass.RELIABLE).to_bytes())

    def send_data(self, stream_id: int, size: int, end: bool = False) -> None:
        """``size`` fresh bytes at the stream's current offset (counted against credit)."""
        offset = self.sent.get(stream_id, 0)
        self.send(self.data_frames(stream_id, offset, os.urandom(size), end))
        self.sent[stream_id] = offset + size
        self.session_sent += size

    def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """``data`` (then END_STREAM when ``end``) at the stream's current offset, as a
        well-behaved sender: now as far as the peer's stream and session credit allow, the
        rest as the peer grants more (while a check waits for frames)."""
        backlog = self.backlog.setdefault(stream_id, Backlog())
        backlog.data += data
        backlog.end = backlog.end or end
        self._flush()

    def _flush(self) -> None:
        """Send what the credit allows of every backlog."""
        for stream_id, backlog in list(self.backlog.items()):
            offset = self.sent.get(stream_id, 0)
            room = min(
                self.stream_credit(stream_id) - offset,
                self.session_credit - self.session_sent,
                len(backlog.data),
            )
            room = max(room, 0)
            if room == 0 and backlog.data:
                continue
            chunk = bytes(backlog.data[:room])
            del backlog.data[:room]
            last = not backlog.data
            if chunk or (last and backlog.end):
                self.send(self.data_frames(stream_id, offset, chunk, backlog.end and last))
                self.sent[stream_id] = offset + len(chunk)
                self.session_sent += len(chunk)
            if last:
                del self.backlog[stream_id]

    def stream_credit(self, stream_id: int) -> int:
        """The peer's current credit limit on one of our streams."""
        assert self.peer_ready is not None
        got = self.streams.get(stream_id)
        return max(self.peer_ready.initial_stream_window, got.credit if got else 0)

    async def settle(self, rounds: int = 3) -> None:
        """PING round trips until one passes with nothing new from the peer."""
        for _ in range(rounds * 4):
            before = (
                self.session_credit, self.session_received,
                tuple((k, len(v.data), v.credit) for k, v in self.streams.items()),
            )  # fmt: skip
            await self.expect_alive()
            after = (
                self.session_credit, self.session_received,
                tuple((k, len(v.data), v.credit) for k, v in self.streams.items()),
            )  # fmt: skip
            if before == after:
                rounds -= 1
                if rounds <= 0:
                    return

    def data_frames(self, stream_id: int, offset: int, data: bytes, end: bool = False) -> bytes:
        """``data`` from ``offset`` in frames the peer's max frame size allows."""
        assert self.peer_ready is not None
        step = self.peer_ready.max_frame_size - 8
        out = bytearray()
        for start in range(0, max(len(data), 1), step):
            chunk = data[start : start + step]
            last = start + step >= len(data)
            out += fr.Data(stream_id, offset + start, chunk, end and last).to_bytes()
        return bytes(out)


FrameT = TypeVar("FrameT", bound=fr.Frame)


def _code(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else f"0x{code:x}"
