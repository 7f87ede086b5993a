"""``SealedStream``: a stream end whose application reads and writes plaintext.

The node seals a service stream end to end (docs/sealing.md): the source wraps the routed
stream it opened with its :class:`~accessfabric.sealing.SealInitiator`, the destination
wraps the stream it serves with a :class:`~accessfabric.sealing.SealResponder` built
from the OPEN_STREAM key exchange.  Between the two ends — across every relay — only
sealed records travel.

The wrapper sits *above* the :class:`~accessfabric.node.streams.resumable.ResumableStream`, so
a stream that resumes on another route keeps its sealing state: the record sequence
simply continues (the resumed path resends the very same ciphertext bytes).

* ``write`` seals each write into records (the destination's first bytes are its reply
  header); ``close`` writes the sealed final record, then ends the stream.
* ``read`` opens records; the end of the stream without the sealed final record, or a
  record that does not verify, resets the stream (``AUTHENTICATION_FAILED``) and raises
  :class:`SealedStreamError` — never unauthenticated bytes.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.errors import ErrorCode, LocalProtocolError, ProtocolError
from accessfabric.node.streams.connection import SessionConnection, read_exactly
from accessfabric.observe.log_format import log_event
from accessfabric.sealing import RecordSealer, SealingError, SealInitiator, SealResponder
from accessfabric.sealing.handshake import parse_key_exchange, stream_context

if TYPE_CHECKING:
    from accessfabric.node.streams.resumable import ResumableStream

log = logging.getLogger(__name__)

KeyResolver = Callable[[str], Awaitable[bytes | None]]
"""A node id -> its sealing public key (None: unknown), possibly after asking the directory."""


class SealedStreamError(ConnectionError):
    """The sealed stream failed: a record did not verify, or it cannot be set up."""


class SealedStream:
    """One end of a sealed stream (a :class:`~accessfabric.node.streams.connection.FabricStream`);
    see the module docstring."""

    def __init__(self, inner: ResumableStream) -> None:
        self.inner = inner
        self.service = inner.service
        self.traffic_class = inner.traffic_class
        self._initiator: SealInitiator | None = None
        self._responder: SealResponder | None = None
        self._plain: deque[bytes] = deque()
        self._ended = False
        self._closed = False
        self._failed: SealedStreamError | None = None
        self._setup: (
            tuple[X25519PrivateKey, bytes, KeyResolver, Callable[[str], None] | None] | None
        ) = None

    # ------------------------------------------------------------ construction

    @classmethod
    def opener(cls, inner: ResumableStream, initiator: SealInitiator) -> SealedStream:
        """The source's end of a stream opened with ``initiator.key_exchange``."""
        stream = cls(inner)
        stream._initiator = initiator
        return stream

    @classmethod
    def destination(
        cls,
        inner: ResumableStream,
        static_key: X25519PrivateKey,
        key_exchange: bytes,
        resolve: KeyResolver,
        on_refused: Callable[[str], None] | None = None,
    ) -> SealedStream:
        """The destination's end; :meth:`establish` builds its keys before the handler runs.

        ``resolve`` finds the opener's sealing key (its node id is in ``key_exchange``);
        ``on_refused(reason)`` is told when the stream cannot be set up.
        """
        stream = cls(inner)
        stream._setup = (static_key, key_exchange, resolve, on_refused)
        return stream

    async def establish(self) -> None:
        """Run the responder (a no-op at the opener); on failure reset the stream
        (``AUTHENTICATION_FAILED``) and raise :class:`SealedStreamError`."""
        if self._setup is None:
            return
        static_key, key_exchange, resolve, on_refused = self._setup
        self._setup = None
        opener_id = _opener_id(key_exchange)
        opener_key = await resolve(opener_id) if opener_id else None
        try:
            responder = SealResponder(
                static_key,
                key_exchange,
                lambda _node_id: opener_key,
                stream_context(self.service, self.inner.resume_token),
                random_bytes=secrets.token_bytes,
            )
        except SealingError as error:
            reason = f"sealing: {error}"
            if on_refused is not None:
                on_refused(reason)
            log_event(
                log, "stream refused", logging.WARNING, service=self.service,
                stream=self.stream_id, code="AUTHENTICATION_FAILED", reason=reason,
            )  # fmt: skip
            self._failed = SealedStreamError(reason)
            with contextlib.suppress(ConnectionError, ProtocolError, LocalProtocolError):
                self.inner.reset(ErrorCode.AUTHENTICATION_FAILED)
            raise self._failed from None
        self._responder = responder
        # the reply (Noise message 2) goes out now, not with the first record: the opener
        # leaves message 1's early key as soon as it has it (docs/sealing.md, version 4)
        self.inner.write(responder.reply_header)

    # ------------------------------------------------------------ delegated state

    @property
    def stream_id(self) -> int:
        return self.inner.stream_id

    @stream_id.setter
    def stream_id(self, value: int) -> None:  # the inner stream's id is the one that counts
        pass

    @property
    def resume_token(self) -> bytes:
        return self.inner.resume_token

    @property
    def resumes(self) -> int:
        """How often the stream moved to another route (its sealing went on unchanged)."""
        return self.inner.resumes

    @property
    def connection(self) -> SessionConnection:
        return self.inner.connection

    @property
    def at_eof(self) -> bool:
        return self._ended and not self._plain

    # ------------------------------------------------------------ reading

    def _unseal(self, data: bytes) -> list[bytes]:
        if self._initiator is not None:
            return self._initiator.feed_reply(data)
        assert self._responder is not None, "establish() first"
        return self._responder.opener.feed(data)

    def _check_end(self) -> None:
        if self._initiator is not None:
            if self._initiator.opener is None:
                raise SealingError("stream ended before the destination's sealed reply")
            self._initiator.opener.check_end()
        else:
            assert self._responder is not None, "establish() first"
            self._responder.opener.check_end()

    def _fail(self, error: BaseException) -> None:
        failure = SealedStreamError(f"sealed stream {self.service!r}: {error}")
        self._failed = failure
        log_event(
            log, "sealed stream failed", logging.WARNING,
            service=self.service, stream=self.stream_id, error=str(error),
        )  # fmt: skip
        with contextlib.suppress(ConnectionError, ProtocolError, LocalProtocolError):
            self.inner.reset(ErrorCode.AUTHENTICATION_FAILED)
        raise failure from None

    async def read(self, max_bytes: int = -1) -> bytes:
        while not self._plain:
            if self._failed is not None:
                raise self._failed
            if self._ended:
                return b""
            data = await self.inner.read()
            try:
                if not data:
                    self._check_end()
                    self._ended = True
                    return b""
                self._plain.extend(self._unseal(data))
            except SealingError as error:
                self._fail(error)
        if max_bytes < 0:
            out = b"".join(self._plain)
            self._plain.clear()
            return out
        head = self._plain[0]
        if len(head) <= max_bytes:
            return self._plain.popleft()
        self._plain[0] = head[max_bytes:]
        return head[:max_bytes]

    # ------------------------------------------------------------ writing

    def _sealer_write(self, records: bytes | bytearray) -> None:
        self.inner.write(records)

    async def readexactly(self, size: int) -> bytes:
        return await read_exactly(self, size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise SealedStreamError("write after close")
        if not data:
            return
        self._sealer_write(self._sealer().seal(memoryview(data)))

    def _sealer(self) -> RecordSealer:
        if self._initiator is not None:
            return self._initiator.sealer
        assert self._responder is not None, "establish() first"
        return self._responder.sealer

    async def drain(self) -> None:
        if self._failed is not None:
            raise self._failed
        await self.inner.drain()

    def close(self) -> None:
        """Write the sealed final record and end our side."""
        if self._closed or self._failed is not None:
            return
        self._closed = True
        with contextlib.suppress(ConnectionError, ProtocolError):
            self._sealer_write(self._sealer().finish())
        self.inner.close()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        self._closed = True
        self.inner.reset(code)


def _opener_id(key_exchange: bytes) -> str:
    """The opener node id in a key-exchange blob, or "" when malformed."""
    parsed = parse_key_exchange(key_exchange)
    return "" if parsed is None else parsed.opener_node_id
