"""The operator's admin credential: a bearer token shown once, stored only as a hash.

Token text: ``afadm1_<id: 16 hex>_<secret: 52 base32>``.  The store keeps, at
``/admin/credentials/<id>``, the SHA-256 of the secret (256 random bits need no slow hash)
and when it was created.  ``control init`` creates the first one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time

from accessfabric.control.server.store.base import Clock, Store

ADMIN_PREFIX = "afadm1"
KEY_PREFIX = "/admin/credentials/"
_DOMAIN = b"accessfabric admin credential v1\x00"
_PATTERN = re.compile(rf"{ADMIN_PREFIX}_([0-9a-f]{{16}})_([a-z2-7]{{52}})")


def _hash(secret: str) -> str:
    return hashlib.sha256(_DOMAIN + secret.encode("ascii")).hexdigest()


class AdminCredentials:
    """Creates and checks admin bearer tokens kept (hashed) in a :class:`Store`."""

    def __init__(self, store: Store, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, str] = {}

    def create(self) -> str:
        """A new admin token; the only copy of its secret is the return value."""
        credential_id = secrets.token_hex(8)
        secret = base64.b32encode(secrets.token_bytes(32)).decode("ascii").rstrip("=").lower()
        document = {"v": 1, "secret_sha256": _hash(secret), "created_at": self._clock()}
        result = self._store.put_if(KEY_PREFIX + credential_id, json.dumps(document).encode(), 0)
        if not result.succeeded:  # pragma: no cover - 64 random bits collided
            raise RuntimeError("credential id collision; try again")
        return f"{ADMIN_PREFIX}_{credential_id}_{secret}"

    def check(self, token: str) -> bool:
        """True when ``token`` is a stored admin credential."""
        match = _PATTERN.fullmatch(token.strip()) if isinstance(token, str) else None
        if match is None:
            return False
        credential_id, secret = match.groups()
        stored = self._cache.get(credential_id)
        if stored is None:
            entry = self._store.get(KEY_PREFIX + credential_id)
            if entry is None:
                return False
            try:
                stored = str(json.loads(entry.value)["secret_sha256"])
            except (ValueError, KeyError, TypeError):
                return False
            self._cache[credential_id] = stored
        return hmac.compare_digest(stored, _hash(secret))

    def count(self) -> int:
        return len(self._store.range(KEY_PREFIX).entries)
