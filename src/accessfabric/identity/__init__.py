"""Node identity: keys, node ids, the sealing key, AUTH signing, rate limits and TLS binding.

Everything here is synchronous and I/O-free except key/certificate files and ``ssl``
contexts (:mod:`accessfabric.identity.tls` builds contexts; it never opens sockets).
"""

from __future__ import annotations

from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.errors import IdentityError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import (
    node_id_from_public_key,
    parse_node_id,
    verify_public_key_matches,
)
from accessfabric.identity.ratelimit import KeyedRateLimiter, TokenBucket
from accessfabric.identity.sealing_key import derive_sealing_private_key
from accessfabric.identity.signatures import verify_signature
from accessfabric.identity.transcript import transcript_hash

__all__ = [
    "Ed25519Authenticator",
    "IdentityError",
    "KeyedRateLimiter",
    "NodeKey",
    "TokenBucket",
    "derive_sealing_private_key",
    "node_id_from_public_key",
    "parse_node_id",
    "transcript_hash",
    "verify_public_key_matches",
    "verify_signature",
]
