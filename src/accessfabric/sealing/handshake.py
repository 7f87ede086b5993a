"""Key agreement for a sealed stream (a Noise IK-like pattern with X25519, HKDF and an AEAD).

The opener knows the destination's static X25519 key (from its signed node
record) and proves its own static key; the OPEN_STREAM key-exchange blob
carries ``version (2) | cipher suite | opener ephemeral public key | opener node id``:

- opener -> destination records are keyed from ``es || ss``
  (``es = DH(e_opener, S_dest)``, ``ss = DH(S_opener, S_dest)``): only the two
  nodes can compute them; forward secret against a later leak of the
  opener's static key, not of the destination's (as Noise IK's first message);
- the destination answers with its own ephemeral key as the first 33 bytes of
  its direction, and destination -> opener records are keyed from
  ``es || ss || ee`` (``ee = DH(e_dest, e_opener)``): forward secret.

Every key also depends on a transcript of both static keys, the opener's
ephemeral key, the stream context (service name, resume token) and the version and
cipher suite, so a blob replayed into another stream derives different keys and a relay
that changes the suite (or the version) makes the two ends derive different keys: the
first record fails (downgrade protection).

The opener picks the suite (:class:`~.records.CipherSuite`: ChaCha20-Poly1305 or
AES-256-GCM); the destination uses the one the blob names.  A version 1 blob (no suite
byte, its own transcript label) is still accepted as ChaCha20-Poly1305.

Both ends also derive a *resume key* from ``es`` alone (the destination's data plane
computes it from the blob with its static key, no directory needed): only the opener
(who holds ``e_opener``) and the destination (who holds ``S_dest``) know it, and it
keys the proofs that let a stream resume on another route (:mod:`.resume_proof`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from accessfabric.sealing.records import CipherSuite, RecordOpener, RecordSealer, SealingError
from accessfabric.sealing.resume_proof import PROOF_SIZE
from accessfabric.wire.limits import MAX_KEY_EXCHANGE

EXCHANGE_ROOM = MAX_KEY_EXCHANGE - PROOF_SIZE
"""The largest key exchange an opener sends: a resume from offset 0 carries the resume
proof and the original exchange in one OPEN_STREAM field (``MAX_KEY_EXCHANGE``)."""

VERSION = 2
"""The version this module sends: its blob names the cipher suite."""
LEGACY_VERSION = 1
"""Accepted from older openers: no suite byte, ChaCha20-Poly1305."""
KEY_SIZE = 32
REPLY_SIZE = 1 + KEY_SIZE
_PROLOGUE = b"accessfabric e2e sealing v1"
_PROLOGUE_V2 = b"accessfabric e2e sealing v2"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyExchange:
    """A parsed OPEN_STREAM key-exchange blob (:func:`parse_key_exchange`)."""

    version: int
    suite: int
    """The cipher suite byte as sent (:meth:`CipherSuite.from_wire` checks it); 1 for v1."""
    ephemeral_public: bytes
    opener_node_id: str
    opener_record: bytes
    """The opener's signed node record, or b"" when it left it out."""
    opened_ms: int | None = None
    """When the opener made the exchange (Unix ms; v2): a destination refuses an exchange
    older than it remembers served streams, so a recorded open cannot be replayed later."""

    def transcript_head(self) -> tuple[bytes, ...]:
        """What the version binds into the transcript besides the keys and context:
        nothing for v1 (its keys stay as they were), ``version | suite | opened_ms`` for
        v2 (a relay that changes any of them changes both ends' keys)."""
        if self.version == LEGACY_VERSION:
            return ()
        opened = (self.opened_ms or 0).to_bytes(8, "big")
        return (bytes((self.version, self.suite)) + opened,)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _public(raw: bytes, what: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SealingError(f"{what} is not an X25519 public key") from None


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # an all-zero result: a low-order point from a hostile peer
        raise SealingError("key agreement produced a degenerate secret") from None


def _transcript(*parts: bytes, prologue: bytes = _PROLOGUE) -> bytes:
    digest = hashlib.sha256()
    for part in (prologue, *parts):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


def _resume_key(es: bytes, destination_static: bytes, ephemeral_public: bytes) -> bytes:
    transcript = _transcript(b"resume", destination_static, ephemeral_public)
    return _key(es, transcript, b"resume key")


def _handshake_transcript(
    exchange: KeyExchange, opener_static: bytes, destination_static: bytes, context: bytes
) -> bytes:
    """The salt of the opener -> destination key: binds both static keys, the opener's
    ephemeral key, the context and (v2) the version and suite."""
    return _transcript(
        *exchange.transcript_head(), opener_static, destination_static,
        exchange.ephemeral_public, context, prologue=_prologue(exchange.version),
    )  # fmt: skip


def _prologue(version: int) -> bytes:
    """The label every transcript hash of a ``version`` handshake starts with."""
    return _PROLOGUE if version == LEGACY_VERSION else _PROLOGUE_V2


def _key(secret: bytes, transcript: bytes, label: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_SIZE, salt=transcript, info=_PROLOGUE + b" " + label).derive(
        secret
    )


class SealInitiator:
    """The stream opener's side."""

    def __init__(
        self,
        static_key: X25519PrivateKey,
        local_node_id: str,
        destination_static: bytes,
        context: bytes,
        opener_record: bytes = b"",
        max_exchange: int = EXCHANGE_ROOM,
        suite: CipherSuite = CipherSuite.CHACHA20_POLY1305,
        opened_ms: int | None = None,
    ) -> None:
        """``opener_record``: this node's signed node record, sent so a destination that
        does not know this node (least-knowledge directory) can learn its sealing key.

        ``suite``: the records' AEAD (both directions); the blob names it and the keys
        bind it.

        ``opened_ms``: the wall-clock time the blob states (default: now); the keys bind it.

        ``max_exchange``: the record is left out when the exchange would grow beyond it
        (default: room for a resume proof beside it in OPEN_STREAM, so a stream resumed
        from offset 0 can still carry its exchange and be served anew)."""
        node_id = local_node_id.encode("utf-8")
        if not 0 < len(node_id) < 256:
            raise ValueError("node id must be 1..255 bytes")
        destination = _public(destination_static, "destination static key")
        self._ephemeral = X25519PrivateKey.generate()
        ephemeral_public = _raw(self._ephemeral.public_key())
        self.suite = suite
        opened = int(time.time() * 1000) if opened_ms is None else opened_ms
        self.key_exchange = (
            bytes((VERSION, suite))
            + opened.to_bytes(8, "big")
            + ephemeral_public
            + bytes((len(node_id),))
            + node_id
        )
        if opener_record and len(self.key_exchange) + 2 + len(opener_record) <= max_exchange:
            # (a record too large is left out: the destination then needs this node's key
            # from its directory or configuration)
            self.key_exchange += len(opener_record).to_bytes(2, "big") + opener_record
        es = _dh(self._ephemeral, destination)
        ss = _dh(static_key, destination)
        self._secret = es + ss
        self.resume_key = _resume_key(es, destination_static, ephemeral_public)
        """Keys this stream's resume proofs; pass it to ``RouteManager.open_stream``."""
        sent = KeyExchange(
            version=VERSION, suite=suite, ephemeral_public=ephemeral_public,
            opener_node_id=local_node_id, opener_record=b"", opened_ms=opened,
        )  # fmt: skip
        self._transcript = _handshake_transcript(
            sent, _raw(static_key.public_key()), destination_static, context
        )
        self.sealer = RecordSealer(
            _key(self._secret, self._transcript, b"opener to destination"), suite
        )
        self._reply = bytearray()
        self.opener: RecordOpener | None = None

    def feed_reply(self, data: bytes | memoryview) -> list[bytes]:
        """Bytes from the destination: the reply header first, then its sealed records."""
        if self.opener is None:
            need = REPLY_SIZE - len(self._reply)
            self._reply += data[:need]
            data = data[need:]
            if len(self._reply) < REPLY_SIZE:
                return []
            if self._reply[0] != VERSION:
                raise SealingError(f"unsupported sealing version {self._reply[0]}")
            reply_public = bytes(self._reply[1:])
            ee = _dh(self._ephemeral, _public(reply_public, "reply ephemeral key"))
            transcript = _transcript(self._transcript, reply_public, prologue=_prologue(VERSION))
            self.opener = RecordOpener(
                _key(self._secret + ee, transcript, b"destination to opener"), self.suite
            )
        return self.opener.feed(data) if data else []


class SealResponder:
    """The destination's side, built from the OPEN_STREAM key-exchange blob."""

    def __init__(
        self,
        static_key: X25519PrivateKey,
        key_exchange: bytes,
        static_key_of: Callable[[str], bytes | None],
        context: bytes,
    ) -> None:
        """``static_key_of(node_id)`` returns that node's sealing key from its signed record."""
        parsed = parse_key_exchange(key_exchange)
        if parsed is None:
            raise SealingError("malformed or unsupported key exchange")
        self.suite = CipherSuite.from_wire(parsed.suite)
        self.opener_node_id = parsed.opener_node_id
        opener_static = static_key_of(self.opener_node_id)
        if opener_static is None:
            raise SealingError(f"no sealing key known for opener {self.opener_node_id}")
        ephemeral = _public(parsed.ephemeral_public, "opener ephemeral key")
        es = _dh(static_key, ephemeral)
        ss = _dh(static_key, _public(opener_static, "opener static key"))
        transcript = _handshake_transcript(
            parsed, opener_static, _raw(static_key.public_key()), context
        )
        self.opener = RecordOpener(_key(es + ss, transcript, b"opener to destination"), self.suite)
        reply_key = X25519PrivateKey.generate()
        reply_public = _raw(reply_key.public_key())
        ee = _dh(reply_key, ephemeral)
        self.sealer = RecordSealer(
            _key(
                es + ss + ee,
                _transcript(transcript, reply_public, prologue=_prologue(parsed.version)),
                b"destination to opener",
            ),
            self.suite,
        )
        self.reply_header = bytes((parsed.version,)) + reply_public
        """``version | e_d``: the version echoes the opener's (a v1 opener expects 1)."""


def stream_context(service: str, resume_token: bytes) -> bytes:
    """The context every sealed stream binds its keys to: its service name and resume token."""
    return service.encode("utf-8") + b"\x00" + resume_token


def parse_key_exchange(key_exchange: bytes) -> KeyExchange | None:
    """The parts of a version 1 or 2 key-exchange blob; None when it is malformed.

    The suite byte is returned as sent: an unknown one is the responder's error
    (:meth:`CipherSuite.from_wire`), so it is refused as sealing, never served unsealed."""
    if not is_sealing_key_exchange(key_exchange):
        return None
    version = key_exchange[0]
    opened_ms: int | None = None
    if version == LEGACY_VERSION:
        suite = CipherSuite.CHACHA20_POLY1305.value
    else:
        suite = key_exchange[1]
        opened_ms = int.from_bytes(key_exchange[2:10], "big")
    start = _ephemeral_offset(version)
    ephemeral_public = bytes(key_exchange[start : start + KEY_SIZE])
    id_length = key_exchange[start + KEY_SIZE]
    id_start = start + KEY_SIZE + 1
    id_end = id_start + id_length
    if id_length == 0 or len(key_exchange) < id_end:
        return None
    node_id = bytes(key_exchange[id_start:id_end]).decode("utf-8", "replace")
    rest = key_exchange[id_end:]
    record = b""
    if rest:
        if len(rest) <= 2 or int.from_bytes(rest[:2], "big") != len(rest) - 2:
            return None
        record = bytes(rest[2:])
    return KeyExchange(
        version=version, suite=suite, ephemeral_public=ephemeral_public,
        opener_node_id=node_id, opener_record=record, opened_ms=opened_ms,
    )  # fmt: skip


def _ephemeral_offset(version: int) -> int:
    """Where the opener's ephemeral key starts in a blob of ``version`` (after the suite
    byte and the u64 ``opened_ms`` in v2)."""
    return 1 if version == LEGACY_VERSION else 10


def is_sealing_key_exchange(key_exchange: bytes) -> bool:
    """Whether an OPEN_STREAM key-exchange blob has this module's layout (version 1 or 2,
    long enough for the ephemeral key and the node id length)."""
    if not key_exchange or key_exchange[0] not in (LEGACY_VERSION, VERSION):
        return False
    return len(key_exchange) >= _ephemeral_offset(key_exchange[0]) + KEY_SIZE + 1


def destination_resume_key(static_key: X25519PrivateKey, key_exchange: bytes) -> bytes | None:
    """The resume key of a sealed stream at its destination.

    None when ``key_exchange`` is not a sealing blob: an unsealed stream has no secret to
    bind its resumes to.  :class:`SealingError` when it is one but unusable (a low-order
    ephemeral key): the sealing would fail the same way.  The same for both versions and
    every suite: it depends on ``es``, the destination's key and the ephemeral key only.
    """
    if not is_sealing_key_exchange(key_exchange):
        return None
    start = _ephemeral_offset(key_exchange[0])
    ephemeral_public = key_exchange[start : start + KEY_SIZE]
    es = _dh(static_key, _public(ephemeral_public, "opener ephemeral key"))
    return _resume_key(es, _raw(static_key.public_key()), ephemeral_public)
