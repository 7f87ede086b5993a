"""Node-signed HTTP requests: what a node adds to a control API request, and how it is checked.

A request carries three headers::

    AF-Node:      <node id>
    AF-Timestamp: <Unix milliseconds, decimal>
    AF-Signature: <Ed25519 signature, unpadded base64url (86 characters)>

The signature is by the node key over::

    b"accessfabric request v1\\x00" METHOD "\\n" PATH "\\n" TIMESTAMP "\\n" hex(sha256(BODY))

``PATH`` is the path with its query string exactly as sent (``request.raw_path``), ``METHOD``
upper case, ``BODY`` the raw body bytes (empty for GET).  The server accepts a request when
the node is enrolled, the signature verifies with the node's registered key, the timestamp
is within ``window`` seconds of its clock (either way), and the same signature has not been
accepted within the window (replay cache).  A client makes each timestamp larger than its
previous one (:class:`RequestSigner`), so two identical requests never share a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from accessfabric.identity.keys import NodeKey
from accessfabric.identity.signatures import SIGNATURE_LENGTH, load_public_key

NODE_HEADER = "AF-Node"
TIMESTAMP_HEADER = "AF-Timestamp"
SIGNATURE_HEADER = "AF-Signature"
MAC_HEADER = "AF-MAC"
MAC_LENGTH = 32
CONTEXT = b"accessfabric request v1\x00"
DEFAULT_WINDOW = 30.0
"""Seconds a signed request stays acceptable either side of the server's clock."""
MAX_REPLAY_ENTRIES = 1_000_000
"""Bound on the replay cache: beyond it the oldest signatures are forgotten early."""


class RequestAuthError(Exception):
    """A signed request is refused; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def signing_input(method: str, path: str, timestamp_ms: int, body: bytes) -> bytes:
    """The bytes a node signs for one request."""
    digest = hashlib.sha256(body).hexdigest()
    return CONTEXT + f"{method.upper()}\n{path}\n{timestamp_ms}\n{digest}".encode()


def mac_tag(key: bytes, method: str, path: str, timestamp_ms: int, body: bytes) -> bytes:
    """HMAC-SHA256 with a heartbeat session key over the same bytes a node signs."""
    return hmac.new(key, signing_input(method, path, timestamp_ms, body), hashlib.sha256).digest()


def encode_signature(signature: bytes) -> str:
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def decode_signature(text: str) -> bytes:
    """The raw signature; :class:`RequestAuthError` unless it is 64 bytes of base64url."""
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"==")
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RequestAuthError("bad_signature", "AF-Signature is not base64url") from None
    if len(raw) != SIGNATURE_LENGTH:
        raise RequestAuthError("bad_signature", "AF-Signature is not a 64-byte signature")
    return raw


def decode_tag(text: str) -> bytes:
    """The raw 32-byte HMAC-SHA256 tag of an ``AF-MAC`` header; else ``bad_mac``."""
    if len(text) != 43:
        raise RequestAuthError("bad_mac", "AF-MAC tag is not a 32-byte base64url value")
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=")
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RequestAuthError("bad_mac", "AF-MAC tag is not base64url") from None
    if len(raw) != MAC_LENGTH:  # pragma: no cover - 43 base64url characters are 32 bytes
        raise RequestAuthError("bad_mac", "AF-MAC tag is not a 32-byte base64url value")
    return raw


class RequestSigner:
    """Adds the three headers to outgoing requests; timestamps strictly increase."""

    def __init__(self, key: NodeKey, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._last_ms = 0

    @property
    def node_id(self) -> str:
        return self._key.node_id

    def _next_ms(self) -> int:
        now_ms = max(int(self._clock() * 1000), self._last_ms + 1)
        self._last_ms = now_ms
        return now_ms

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        now_ms = self._next_ms()
        signature = self._key.sign(signing_input(method, path, now_ms, body))
        return {
            NODE_HEADER: self.node_id,
            TIMESTAMP_HEADER: str(now_ms),
            SIGNATURE_HEADER: encode_signature(signature),
        }

    def mac_headers(
        self, method: str, path: str, body: bytes, key: bytes, revision: int
    ) -> dict[str, str]:
        """``AF-Node``, ``AF-Timestamp`` and ``AF-MAC`` (HMAC-SHA256 with ``key``, the
        session key of record ``revision``; see
        :mod:`accessfabric.control.client.heartbeat_mac`)."""
        now_ms = self._next_ms()
        tag = mac_tag(key, method, path, now_ms, body)
        encoded = base64.urlsafe_b64encode(tag).rstrip(b"=").decode("ascii")
        return {
            NODE_HEADER: self.node_id,
            TIMESTAMP_HEADER: str(now_ms),
            MAC_HEADER: f"{revision}.{encoded}",
        }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of a request the verifier needs (``mac``: the ``AF-MAC`` value, if any)."""

    method: str
    path: str
    body: bytes
    node_id: str
    timestamp: str
    signature: str
    mac: str = ""


class ReplayCache:
    """Signatures accepted within the window; a second use is a replay."""

    def __init__(self, window: float, max_entries: int = MAX_REPLAY_ENTRIES) -> None:
        self._window = window
        self._max = max_entries
        self._seen: set[bytes] = set()
        self._order: deque[tuple[float, bytes]] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - 2 * self._window
        order, seen = self._order, self._seen
        while order and (order[0][0] < horizon or len(order) > self._max):
            seen.discard(order.popleft()[1])

    def check_and_add(self, signature: bytes, now: float) -> None:
        self._prune(now)
        tag = signature[:32]
        if tag in self._seen:
            raise RequestAuthError("replayed", "this signed request was already accepted")
        self._seen.add(tag)
        self._order.append((now, tag))

    def __len__(self) -> int:
        return len(self._seen)


def parse_timestamp(text: str, now: float, window: float) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise RequestAuthError("bad_timestamp", "AF-Timestamp must be Unix milliseconds")
    timestamp_ms = int(text)
    skew = timestamp_ms / 1000 - now
    if abs(skew) > window:
        raise RequestAuthError(
            "stale_timestamp",
            f"AF-Timestamp is {skew:+.1f} s from the server clock (allowed: ±{window:g} s); "
            "check the node's clock",
        )
    return timestamp_ms


@lru_cache(maxsize=65536)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return load_public_key(raw)


def check_signature(public_key: bytes, request: SignedRequest, timestamp_ms: int) -> bytes:
    """The raw signature if it verifies; :class:`RequestAuthError` otherwise."""
    signature = decode_signature(request.signature)
    message = signing_input(request.method, request.path, timestamp_ms, request.body)
    try:
        _public_key(public_key).verify(signature, message)
    except Exception:  # InvalidSignature or a bad key: the same answer either way
        raise RequestAuthError(
            "bad_signature", "AF-Signature does not verify with the node's registered key"
        ) from None
    return signature
