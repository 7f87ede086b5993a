"""Heartbeat MACs: a per-node HMAC key agreed with X25519, so heartbeats skip Ed25519.

Scheme (docs/control.md "Heartbeat MAC", ADR 0010):

* **Control key.**  The X25519 key derived from the authority key's seed (the same
  derivation as a node's sealing key; the authority seals nothing else with it).  Every
  replica that holds the authority key holds it.  It is published as a *statement*: the
  raw public key and the authority's Ed25519 signature over
  ``b"accessfabric heartbeat mac key v1\\x00" || control_public_key``; a node checks it
  with its pinned authority key before it uses the key.
* **Node key.**  The X25519 sealing key of the node's signed record.
* **Session key**, bound to the node id and the record revision::

      shared = X25519(node_sealing_private, control_public)
             = X25519(control_private, record.sealing_public_key)
      key    = HKDF-SHA256(ikm=shared, salt=b"accessfabric heartbeat mac v1",
                           info=node_id || 0x00 || u64be(revision)
                                || node_sealing_public || control_public, length=32)

  No secret crosses the wire.  A new record revision (renewal, role revocation,
  re-enrollment) is a new key; the server accepts only the key of the record it holds.
* **Tag.**  ``HMAC-SHA256(key, signing_input(method, path, timestamp, body))`` -- the
  bytes an Ed25519 request signature covers -- sent as ``AF-MAC: <revision>.<base64url
  tag>`` in place of ``AF-Signature``.  Only ``POST /v1/heartbeat`` accepts it.
"""

from __future__ import annotations

import base64
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from accessfabric.control.client.requestsig import RequestAuthError, decode_tag, mac_tag
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import NodeRecord
from accessfabric.identity.signatures import load_public_key

STATEMENT_CONTEXT = b"accessfabric heartbeat mac key v1\x00"
KDF_SALT = b"accessfabric heartbeat mac v1"
MAC_METHOD = "POST"
MAC_PATH = "/v1/heartbeat"
"""The one endpoint that accepts ``AF-MAC``; every other request is signed with Ed25519."""
MAX_REVISION_DIGITS = 20


class MacKeyError(ValueError):
    """A published control key does not verify with the pinned authority key."""


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def statement_message(control_public_key: bytes) -> bytes:
    return STATEMENT_CONTEXT + control_public_key


def session_key(
    shared: bytes, node_id: str, revision: int, node_public: bytes, control_public: bytes
) -> bytes:
    """HKDF of an X25519 shared secret into the 32-byte HMAC key of one record revision."""
    info = node_id.encode("ascii") + b"\x00" + struct.pack(">Q", revision)
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=KDF_SALT,
        info=info + node_public + control_public,
    )
    return hkdf.derive(shared)


def encode_mac_header(revision: int, tag: bytes) -> str:
    return f"{revision}." + base64.urlsafe_b64encode(tag).rstrip(b"=").decode("ascii")


def parse_mac_header(text: str) -> tuple[int, bytes]:
    """``(revision, tag)`` of an ``AF-MAC`` value; :class:`RequestAuthError` ``bad_mac``."""
    revision_text, dot, tag_text = text.partition(".")
    if (
        not dot
        or not revision_text.isascii()
        or not revision_text.isdigit()
        or len(revision_text) > MAX_REVISION_DIGITS
    ):
        raise RequestAuthError("bad_mac", "AF-MAC must be '<record revision>.<base64url tag>'")
    return int(revision_text), decode_tag(tag_text)


@dataclass(frozen=True, slots=True)
class ControlMacKey:
    """The control plane's published X25519 key and the authority's signature over it."""

    public_key: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, document: object, authority_public_key: bytes) -> ControlMacKey:
        """A published statement, checked with the pinned authority key; else MacKeyError."""
        if not isinstance(document, dict):
            raise MacKeyError("mac_key: expected an object")
        try:
            public_key = base64.b64decode(str(document.get("public_key")), validate=True)
            signature = base64.b64decode(str(document.get("signature")), validate=True)
        except ValueError:
            raise MacKeyError("mac_key: expected base64 fields") from None
        if len(public_key) != 32:
            raise MacKeyError("mac_key: public_key is not 32 bytes")
        try:
            load_public_key(authority_public_key).verify(signature, statement_message(public_key))
        except Exception:  # InvalidSignature or malformed: the same answer either way
            raise MacKeyError("mac_key: not signed by the pinned authority key") from None
        return cls(public_key=public_key, signature=signature)


def node_session_key(
    sealing_private: X25519PrivateKey, node_id: str, revision: int, control: ControlMacKey
) -> bytes:
    """The node side: its HMAC key for record ``revision``."""
    shared = sealing_private.exchange(X25519PublicKey.from_public_bytes(control.public_key))
    node_public = _raw(sealing_private.public_key())
    return session_key(shared, node_id, revision, node_public, control.public_key)


class ControlMacKeys:
    """The control side: the published statement and per-node keys, cached per revision."""

    def __init__(self, authority: Authority) -> None:
        self._private = authority.mac_private_key()
        self.public_key = _raw(self._private.public_key())
        signature = authority.sign(statement_message(self.public_key))
        self.statement = ControlMacKey(self.public_key, signature)
        self.statement_json = self.statement.to_json()
        self._keys: dict[str, tuple[int, bytes, bytes]] = {}

    def key_for(self, record: NodeRecord) -> bytes:
        """The HMAC key of ``record`` (node id, revision, sealing key); derived once."""
        cached = self._keys.get(record.node_id)
        if (
            cached is not None
            and cached[0] == record.revision
            and cached[1] == record.sealing_public_key
        ):
            return cached[2]
        try:
            peer = X25519PublicKey.from_public_bytes(record.sealing_public_key)
            shared = self._private.exchange(peer)
        except ValueError:  # a low-order point: no key, no MAC path for this node
            raise RequestAuthError(
                "bad_mac", "this node's sealing key cannot agree a MAC key; sign with Ed25519"
            ) from None
        key = session_key(
            shared, record.node_id, record.revision, record.sealing_public_key, self.public_key
        )
        self._keys[record.node_id] = (record.revision, record.sealing_public_key, key)
        return key

    def check(
        self,
        record: NodeRecord,
        method: str,
        path: str,
        timestamp_ms: int,
        body: bytes,
        header: str,
    ) -> bytes:
        """The tag if ``header`` authenticates the request for ``record``; else raises."""
        if method != MAC_METHOD or path != MAC_PATH:
            raise RequestAuthError(
                "mac_not_allowed", f"AF-MAC is accepted on {MAC_METHOD} {MAC_PATH} only"
            )
        revision, tag = parse_mac_header(header)
        if revision != record.revision:
            raise RequestAuthError(
                "stale_mac_key",
                f"AF-MAC uses the key of record revision {revision}, not the current one; "
                "sign with Ed25519 to get the current record",
            )
        expected = mac_tag(self.key_for(record), method, path, timestamp_ms, body)
        if not hmac.compare_digest(expected, tag):
            raise RequestAuthError("bad_mac", "AF-MAC does not verify with this node's MAC key")
        return tag
