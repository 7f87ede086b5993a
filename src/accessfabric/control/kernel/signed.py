"""The signed envelope: ``header | body | Ed25519 signature``, and signing with the authority.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic  b"AFSO"
    4       1     format version (1)
    5       1     type tag (ObjectType: 1 node record, 2 route lease, 3 service lease,
                  4 access policy)
    6       4     body length N (at most MAX_BODY_LENGTH)
    10      N     body (the object's canonical fields, objects.py)
    10+N    64    signature

The signature is Ed25519 by the authority key over ``SIGNING_CONTEXT + blob[:10 + N]``:
it covers the type tag and the version, so a signature made for one object type can
never verify as another, and the context keeps it apart from any other use of the key.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, TypeVar

from accessfabric.control.kernel.codec import MalformedError
from accessfabric.control.kernel.objects import (
    AccessPolicy,
    NodeRecord,
    ObjectType,
    RouteLease,
    ServiceLease,
)
from accessfabric.control.kernel.rejections import RejectReason, SignedObjectRejected
from accessfabric.identity.signatures import SIGNATURE_LENGTH, verify_signature

MAGIC = b"AFSO"
FORMAT_VERSION = 1
HEADER_LENGTH = 10
MAX_BODY_LENGTH = 16 * 1024
SIGNING_CONTEXT = b"accessfabric signed object v1\x00"

_NAMES = {
    ObjectType.NODE_RECORD: "node record",
    ObjectType.ROUTE_LEASE: "route lease",
    ObjectType.SERVICE_LEASE: "service lease",
    ObjectType.ACCESS_POLICY: "access policy",
}

_T = TypeVar("_T", NodeRecord, RouteLease, ServiceLease, AccessPolicy)

OPENED_CACHE_SIZE = 2048
"""Blobs :func:`open_signed` remembers having opened (least recently used dropped)."""
_opened: OrderedDict[tuple[bytes, bytes], NodeRecord | RouteLease | ServiceLease | AccessPolicy]
_opened = OrderedDict()
"""(authority key, blob) -> the object it decoded to, for blobs whose signature verified.

A node checks the same signed objects again and again (its own record and its cached
leases and access policy on every heartbeat, the directory's records on every fetch;
many devices of ``sim fleet`` share one process and the entries' records): the same
bytes under the same key verify the same way, so only the first costs an Ed25519
verification.  Only successes are remembered (a forged blob is checked every time, as
before) and the objects are frozen; validity times are the callers' and are checked on
every call (:mod:`accessfabric.control.kernel.verify`)."""


class Signer(Protocol):
    """Anything that signs with the authority key (:class:`~accessfabric.control.kernel.authority.
    Authority`, or a :class:`~accessfabric.identity.NodeKey` in tests)."""

    def sign(self, data: bytes) -> bytes: ...


def encode_signed(
    obj: NodeRecord | RouteLease | ServiceLease | AccessPolicy, signer: Signer
) -> bytes:
    """The signed blob of ``obj``: deterministic (Ed25519 signatures are)."""
    body = obj.encode_body()
    if len(body) > MAX_BODY_LENGTH:
        raise ValueError(f"body of {len(body)} bytes exceeds {MAX_BODY_LENGTH}")
    header = MAGIC + bytes((FORMAT_VERSION, obj.object_type)) + len(body).to_bytes(4, "big")
    signed_part = header + body
    signature = signer.sign(SIGNING_CONTEXT + signed_part)
    if len(signature) != SIGNATURE_LENGTH:
        raise ValueError("the signer did not return a 64-byte Ed25519 signature")
    return signed_part + signature


def object_type_of(blob: bytes) -> ObjectType:
    """The type tag of a blob, after checking the envelope's framing (not the signature)."""
    _split(blob)
    return ObjectType(blob[5])


def _split(blob: bytes) -> tuple[ObjectType, bytes, bytes, bytes]:
    """``(type, signed part, body, signature)``; :class:`SignedObjectRejected` if malformed."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(f"a signed object is bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < HEADER_LENGTH + SIGNATURE_LENGTH or blob[:4] != MAGIC:
        raise _malformed("not a signed object (bad magic or too short)")
    if blob[4] != FORMAT_VERSION:
        raise _malformed(f"unknown format version {blob[4]} (this node speaks {FORMAT_VERSION})")
    try:
        kind = ObjectType(blob[5])
    except ValueError:
        raise _malformed(f"unknown object type tag {blob[5]}") from None
    length = int.from_bytes(blob[6:10], "big")
    if length > MAX_BODY_LENGTH or len(blob) != HEADER_LENGTH + length + SIGNATURE_LENGTH:
        raise _malformed("body length does not match the blob")
    end = HEADER_LENGTH + length
    return kind, blob[:end], blob[HEADER_LENGTH:end], blob[end:]


def open_signed(blob: bytes, expected: type[_T], authority_public_key: bytes) -> _T:
    """Check framing, type tag and signature; return the decoded object.

    Raises :class:`SignedObjectRejected` with ``MALFORMED``, ``WRONG_TYPE`` or ``FORGED``.
    The signature is checked before the body is parsed.  Validity times and the rest of the
    policy are the caller's (:mod:`accessfabric.control.kernel.verify`).
    """
    key = (bytes(authority_public_key), bytes(blob))
    held = _opened.get(key)
    if held is not None and type(held) is expected:
        _opened.move_to_end(key)
        return held
    kind, signed_part, body, signature = _split(blob)
    if kind is not expected.object_type:
        raise SignedObjectRejected(
            RejectReason.WRONG_TYPE,
            f"expected a {_NAMES[expected.object_type]}, got a {_NAMES[kind]}",
        )
    if not verify_signature(authority_public_key, SIGNING_CONTEXT + signed_part, signature):
        raise SignedObjectRejected(
            RejectReason.FORGED,
            f"the {_NAMES[kind]} signature does not verify with the authority key",
        )
    try:
        opened = expected.decode_body(body)
    except (MalformedError, ValueError) as exc:
        raise _malformed(f"{_NAMES[kind]} body: {exc}") from None
    _opened[key] = opened
    if len(_opened) > OPENED_CACHE_SIZE:
        _opened.popitem(last=False)
    return opened


def _malformed(message: str) -> SignedObjectRejected:
    return SignedObjectRejected(RejectReason.MALFORMED, message)
