"""Size limits of Fabric Data Session V1.  Every length on the wire is bounded by one of these."""

from __future__ import annotations

HEADER_SIZE = 9
"""length u24 | type u8 | flags u8 | R u1 + stream id u31."""

DEFAULT_MAX_FRAME_SIZE = 64 * 1024
"""Payload bytes a peer may send before SESSION_READY says otherwise."""

MIN_MAX_FRAME_SIZE = 16 * 1024
"""The smallest max frame size a peer may negotiate (every control frame fits)."""

MAX_FRAME_SIZE_CAP = (1 << 24) - 1
"""Hard cap: the u24 length field (16 MiB - 1)."""

MAX_STREAM_ID = (1 << 31) - 1
MAX_U32 = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1

DATA_PREFIX_SIZE = 8
"""DATA carries a u64 byte offset before its payload."""

PUBLIC_KEY_SIZE = 32
NONCE_SIZE = 32
MAX_VERSIONS = 16
MAX_NODE_ID = 64
MAX_CAPABILITIES = 4096
MAX_NODE_RECORD = 4096
MAX_SIGNATURE = 1024
MAX_SERVICE_NAME = 255
MAX_RESUME_TOKEN = 32
MAX_KEY_EXCHANGE = 1024
MAX_ROUTE_LEASE = 8192
MAX_GOAWAY_REASON = 1024
MAX_PRESSURE_LEVEL = 100
