"""Key agreement for a sealed stream: exactly Noise IK (``Noise_IK_25519_<cipher>_SHA256``).

The opener knows the destination's static X25519 key (from its signed node record). The
OPEN_STREAM key-exchange blob (version 4) carries Noise IK's first message::

    version u8 (=4) | suite u8 | opened_ms u64 | Noise message 1 (160) |
      id length u8 | opener node id [ | record length u16 | opener's signed node record ]

- the cipher suite picks the Noise protocol name (suite 1:
  ``Noise_IK_25519_ChaChaPoly_SHA256``, suite 2: ``Noise_IK_25519_AESGCM_SHA256``), and
  the Noise prologue is ``"accessfabric e2e sealing v4" | blob[0:10] | id length | node id
  | service | 0x00 | resume token``: a relay that changes the suite, the time, the opener
  id or moves the blob to another stream makes message 1 fail at the destination;
- message 1's payload (``-> e, es, s, ss``: encrypted to the destination, authenticated
  by the opener's static key) is ``early key (32) | resume key (32)``, both random: the
  opener's first records are sealed at once with the early key (Noise IK's 0-RTT
  payload carries it: no round trip), and the resume key keys the resume proofs
  (:mod:`.resume_proof`);
- once the opener has message 2, its direction changes key: an empty key-change record
  under the early key, then records under ``Split()``'s initiator key from nonce 0
  (:data:`~.records.KEY_CHANGE_BIT`), so only the data sent before message 2 has message
  1's weaker properties (no forward secrecy against the destination's static key);
- the destination answers with Noise message 2 (``<- e, ee, se``, empty payload) as the
  first 49 bytes of its direction (``4 | message 2``); destination -> opener records are
  sealed with the responder's sending key from ``Split()``: forward secret.

Records (:mod:`.records`) are ``EncryptWithAd(header, plaintext)`` of a Noise cipher state
keyed as above.  Noise itself is :mod:`.noise` (checked against the published vectors).
Versions 1 and 2 (the earlier, home-made "IK-like" schedule) are refused with a clear
error, never served: docs/adr/0021-sealing-on-a-published-construction.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.sealing.noise import DHLEN, TAG_SIZE, HandshakeIK, NoiseError
from accessfabric.sealing.records import CipherSuite, RecordOpener, RecordSealer, SealingError
from accessfabric.sealing.resume_proof import PROOF_SIZE
from accessfabric.wire.limits import MAX_KEY_EXCHANGE

EXCHANGE_ROOM = MAX_KEY_EXCHANGE - PROOF_SIZE
"""The largest key exchange an opener sends: a resume from offset 0 carries the resume
proof and the original exchange in one OPEN_STREAM field (``MAX_KEY_EXCHANGE``)."""

VERSION = 4
"""The only version this module sends and accepts (Noise IK, opener key change)."""
RETIRED_VERSIONS = (1, 2, 3)
"""The home-made "IK-like" exchanges before Noise (1, 2) and Noise IK whose opener kept
the early key for the whole stream (3): recognised as sealing, refused."""
KEY_SIZE = 32
PAYLOAD_SIZE = 2 * KEY_SIZE
"""Message 1's payload: ``early key | resume key``."""
MESSAGE1_SIZE = DHLEN + DHLEN + TAG_SIZE + PAYLOAD_SIZE + TAG_SIZE
MESSAGE2_SIZE = DHLEN + TAG_SIZE
REPLY_SIZE = 1 + MESSAGE2_SIZE
HEAD_SIZE = 10
"""``version | suite | opened_ms``: bound into the prologue."""
PROLOGUE_LABEL = b"accessfabric e2e sealing v4"
RandomSource = Callable[[int], bytes]
"""``n`` -> ``n`` random bytes (``secrets.token_bytes`` in a node): the opener's early and
resume keys and both sides' ephemeral keys are drawn from it, so nothing here draws
randomness itself."""
PROTOCOL_NAMES = {
    CipherSuite.CHACHA20_POLY1305: "Noise_IK_25519_ChaChaPoly_SHA256",
    CipherSuite.AES_256_GCM: "Noise_IK_25519_AESGCM_SHA256",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyExchange:
    """A parsed version 4 OPEN_STREAM key-exchange blob (:func:`parse_key_exchange`)."""

    version: int
    suite: int
    """The cipher suite byte as sent (:meth:`CipherSuite.from_wire` checks it)."""
    opened_ms: int
    """When the opener made the exchange (Unix ms): a destination refuses an exchange
    older than it remembers served streams, so a recorded open cannot be replayed later."""
    message: bytes
    """Noise IK message 1."""
    opener_node_id: str
    opener_record: bytes
    """The opener's signed node record, or b"" when it left it out."""

    @property
    def ephemeral_public(self) -> bytes:
        """The opener's ephemeral key (message 1's first 32 bytes, in clear)."""
        return self.message[:DHLEN]


def prologue(key_exchange: bytes, node_id: bytes, context: bytes) -> bytes:
    """The Noise prologue of a version 4 exchange: label, ``version | suite |
    opened_ms``, ``id length | node id``, the stream context."""
    return PROLOGUE_LABEL + key_exchange[:HEAD_SIZE] + bytes((len(node_id),)) + node_id + context


def _suite(value: int) -> CipherSuite:
    return CipherSuite.from_wire(value)


class SealInitiator:
    """The stream opener's side."""

    def __init__(
        self,
        static_key: X25519PrivateKey,
        local_node_id: str,
        destination_static: bytes,
        context: bytes,
        *,
        random_bytes: RandomSource,
        opened_ms: int,
        opener_record: bytes = b"",
        max_exchange: int = EXCHANGE_ROOM,
        suite: CipherSuite = CipherSuite.CHACHA20_POLY1305,
        ephemeral: X25519PrivateKey | None = None,
        payload: bytes | None = None,
    ) -> None:
        """``opener_record``: this node's signed node record, sent so a destination that
        does not know this node (least-knowledge directory) can learn its sealing key.

        ``suite``: the records' AEAD (both directions) and the Noise cipher; the blob
        names it and the Noise protocol name and prologue bind it.

        ``random_bytes``: where the message 1 payload (``early key | resume key``) and then
        the ephemeral key are drawn, in that order.

        ``opened_ms``: the wall-clock time the blob states (the caller's clock, ms since
        the epoch); bound too.

        ``max_exchange``: the record is left out when the exchange would grow beyond it
        (default: room for a resume proof beside it in OPEN_STREAM, so a stream resumed
        from offset 0 can still carry its exchange and be served anew).

        ``ephemeral``, ``payload`` (``early key | resume key``): fixed values for test
        vectors; drawn from ``random_bytes`` by default."""
        node_id = local_node_id.encode("utf-8")
        if not 0 < len(node_id) < 256:
            raise ValueError("node id must be 1..255 bytes")
        if len(destination_static) != DHLEN:
            raise SealingError("destination static key is not an X25519 public key")
        self.suite = suite
        head = bytes((VERSION, suite)) + opened_ms.to_bytes(8, "big")
        secrets = random_bytes(PAYLOAD_SIZE) if payload is None else payload
        if len(secrets) != PAYLOAD_SIZE:
            raise ValueError(f"payload must be {PAYLOAD_SIZE} bytes")
        self._noise = HandshakeIK(
            PROTOCOL_NAMES[suite],
            initiator=True,
            prologue=prologue(head, node_id, context),
            static=static_key,
            ephemeral=_ephemeral(random_bytes) if ephemeral is None else ephemeral,
            remote_static=destination_static,
        )
        message = self._noise.write_message(secrets)
        self.key_exchange = head + message + bytes((len(node_id),)) + node_id
        if opener_record and len(self.key_exchange) + 2 + len(opener_record) <= max_exchange:
            # (a record too large is left out: the destination then needs this node's key
            # from its directory or configuration)
            self.key_exchange += len(opener_record).to_bytes(2, "big") + opener_record
        self.resume_key = secrets[KEY_SIZE:]
        """Keys this stream's resume proofs; pass it to ``RouteManager.open_stream``."""
        self.sealer = RecordSealer(secrets[:KEY_SIZE], suite)
        self._reply = bytearray()
        self.opener: RecordOpener | None = None

    def feed_reply(self, data: bytes | memoryview) -> list[bytes]:
        """Bytes from the destination: the reply header (``4 | Noise message 2``) first,
        then its sealed records."""
        if self.opener is None:
            need = REPLY_SIZE - len(self._reply)
            self._reply += data[:need]
            data = data[need:]
            if len(self._reply) < REPLY_SIZE:
                return []
            if self._reply[0] != VERSION:
                raise SealingError(
                    f"unsupported sealing version {self._reply[0]} in the destination's "
                    f"reply (this node speaks {VERSION}: Noise IK)"
                )
            self._noise.read_message(bytes(self._reply[1:]))
            assert self._noise.transport is not None
            self.opener = RecordOpener(self._noise.transport[1].key, self.suite)
            # from now on this direction is sealed with Split()'s initiator key: the next
            # seal() sends the key-change record first (forward secret from there on)
            if not self.sealer.finished:
                self.sealer.change_key(self._noise.transport[0].key)
        return self.opener.feed(data) if data else []


class SealResponder:
    """The destination's side, built from the OPEN_STREAM key-exchange blob."""

    def __init__(
        self,
        static_key: X25519PrivateKey,
        key_exchange: bytes,
        static_key_of: Callable[[str], bytes | None],
        context: bytes,
        *,
        random_bytes: RandomSource,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        """``static_key_of(node_id)`` returns that node's sealing key from its signed record:
        the static key in message 1 must be it.  The ephemeral key of message 2 is drawn
        from ``random_bytes`` (``ephemeral``: a fixed one, for test vectors)."""
        parsed, noise, secrets = _read_message_one(
            static_key,
            key_exchange,
            context,
            _ephemeral(random_bytes) if ephemeral is None else ephemeral,
        )
        self.suite = _suite(parsed.suite)
        self.opener_node_id = parsed.opener_node_id
        opener_static = static_key_of(self.opener_node_id)
        if opener_static is None:
            raise SealingError(f"no sealing key known for opener {self.opener_node_id}")
        if noise.remote_static != opener_static:
            raise SealingError(
                f"the static key in the exchange is not opener {self.opener_node_id}'s"
            )
        self.resume_key = secrets[KEY_SIZE:]
        reply = noise.write_message(b"")
        assert noise.transport is not None
        # the opener's records: the early key until its key-change record, then Split()'s
        # initiator key (transport[1]: this side's receiving state)
        self.opener = RecordOpener(secrets[:KEY_SIZE], self.suite, noise.transport[1].key)
        self.sealer = RecordSealer(noise.transport[0].key, self.suite)
        self.reply_header = bytes((VERSION,)) + reply
        """``4 | Noise message 2``: the first bytes of the destination's direction."""


def _ephemeral(random_bytes: RandomSource) -> X25519PrivateKey:
    """An X25519 key from 32 random bytes (any 32 bytes are a key: X25519 clamps them)."""
    return X25519PrivateKey.from_private_bytes(random_bytes(DHLEN))


def _read_message_one(
    static_key: X25519PrivateKey,
    key_exchange: bytes,
    context: bytes,
    ephemeral: X25519PrivateKey | None,
) -> tuple[KeyExchange, HandshakeIK, bytes]:
    """Parse the blob and read its Noise message 1: (exchange, handshake, payload).

    ``ephemeral`` is the responder's key for message 2 (None: only message 1 is read)."""
    if key_exchange and key_exchange[0] in RETIRED_VERSIONS:
        raise SealingError(
            f"unsupported sealing key exchange version {key_exchange[0]}: this node speaks "
            f"version {VERSION} (Noise IK) only; upgrade the opener"
        )
    parsed = parse_key_exchange(key_exchange)
    if parsed is None:
        raise SealingError("malformed or unsupported key exchange")
    suite = _suite(parsed.suite)
    noise = HandshakeIK(
        PROTOCOL_NAMES[suite],
        initiator=False,
        prologue=prologue(key_exchange, parsed.opener_node_id.encode("utf-8"), context),
        static=static_key,
        ephemeral=ephemeral,
    )
    try:
        payload = noise.read_message(parsed.message)
    except NoiseError as error:
        raise SealingError(
            f"Noise message 1 does not verify ({error}): changed on the way, made for "
            "another stream or destination, or its suite or time altered"
        ) from None
    if len(payload) != PAYLOAD_SIZE:
        raise SealingError(f"message 1 payload is {len(payload)} bytes, not {PAYLOAD_SIZE}")
    return parsed, noise, payload


def stream_context(service: str, resume_token: bytes) -> bytes:
    """The context every sealed stream binds its keys to: its service name and resume token."""
    return service.encode("utf-8") + b"\x00" + resume_token


def parse_key_exchange(key_exchange: bytes) -> KeyExchange | None:
    """The parts of a version 4 key-exchange blob; None when it is malformed (or of a
    retired version).

    The suite byte is returned as sent: an unknown one is the responder's error
    (:meth:`CipherSuite.from_wire`), so it is refused as sealing, never served unsealed."""
    if len(key_exchange) < HEAD_SIZE + MESSAGE1_SIZE + 2 or key_exchange[0] != VERSION:
        return None
    suite = key_exchange[1]
    opened_ms = int.from_bytes(key_exchange[2:HEAD_SIZE], "big")
    message = bytes(key_exchange[HEAD_SIZE : HEAD_SIZE + MESSAGE1_SIZE])
    id_length = key_exchange[HEAD_SIZE + MESSAGE1_SIZE]
    id_start = HEAD_SIZE + MESSAGE1_SIZE + 1
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
        version=VERSION, suite=suite, opened_ms=opened_ms, message=message,
        opener_node_id=node_id, opener_record=record,
    )  # fmt: skip


def is_sealing_key_exchange(key_exchange: bytes) -> bool:
    """Whether an OPEN_STREAM key-exchange blob asks for sealing: version 4, or a retired
    version 1, 2 or 3 (refused as sealing with a clear error, never served unsealed)."""
    return bool(key_exchange) and key_exchange[0] in (VERSION, *RETIRED_VERSIONS)


def destination_resume_key(
    static_key: X25519PrivateKey, key_exchange: bytes, context: bytes
) -> bytes | None:
    """The resume key of a sealed stream at its destination (message 1's payload).

    None when ``key_exchange`` is not a sealing blob: an unsealed stream has no secret to
    bind its resumes to.  :class:`SealingError` when it is one but unusable (a retired
    version, an unknown suite, a message 1 that does not verify with this node's static
    key and ``context``): the sealing would fail the same way."""
    if not is_sealing_key_exchange(key_exchange):
        return None
    _parsed, _noise, payload = _read_message_one(static_key, key_exchange, context, None)
    return payload[KEY_SIZE:]
