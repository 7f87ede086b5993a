"""Enrollment tokens: a secret shown once, stored only as a hash, redeemed a limited number
of times.

Token text: ``aft1_<token id: 16 hex>_<secret: 52 base32>`` (only ``[a-z0-9_]``, so a
double-click selects all of it).  The store holds, at ``/tokens/<token id>``, a JSON record
with the SHA-256 of the secret (the secret is 256 random bits: no slow hash is needed),
tenant, roles, expiry and the uses left.  Redeeming decrements the uses with a
compare-and-swap on the record's ``mod_revision``, so concurrent redeems of a one-use
token cannot both win, on SQLite or on etcd.  The record is attached to a store lease that
outlives the token by ``retention`` seconds, after which it disappears by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from accessfabric.control.kernel.vocabulary import Role, check_name
from accessfabric.control.server.store.base import Clock, Entry, LeaseNotFoundError, Store

TOKEN_PREFIX = "aft1"
KEY_PREFIX = "/tokens/"
DEFAULT_RETENTION = 7 * 24 * 3600.0
"""Seconds an expired or used-up token is kept (so redeeming it says why it fails)."""
MAX_CAS_ATTEMPTS = 16
_SECRET_DOMAIN = b"accessfabric enrollment token v1\x00"
_TOKEN_PATTERN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{16}})_([a-z2-7]{{52}})")


class TokenError(Exception):
    """An enrollment token cannot be redeemed; the subclass says why."""


class BadTokenError(TokenError):
    """Malformed, unknown, revoked, or the secret does not match (indistinguishable on
    purpose: a guesser learns nothing)."""


class TokenExpiredError(TokenError):
    """The token was valid but its time is up."""


class TokenUsedUpError(TokenError):
    """The token has been redeemed as many times as it allows."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    token_id: str
    tenant: str
    roles: frozenset[Role]
    created_at: float
    expires_at: float
    uses_left: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CreatedToken:
    """A new token: ``token`` is the only copy of the secret; show it once."""

    token: str
    info: TokenInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class _Record:
    secret_hash: str
    info: TokenInfo

    def encode(self) -> bytes:
        document = {
            "v": 1,
            "secret_sha256": self.secret_hash,
            "tenant": self.info.tenant,
            "roles": sorted(role.value for role in self.info.roles),
            "created_at": self.info.created_at,
            "expires_at": self.info.expires_at,
            "uses_left": self.info.uses_left,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, token_id: str, data: bytes) -> _Record:
        document = json.loads(data)
        return cls(
            secret_hash=document["secret_sha256"],
            info=TokenInfo(
                token_id=token_id,
                tenant=document["tenant"],
                roles=frozenset(Role(role) for role in document["roles"]),
                created_at=float(document["created_at"]),
                expires_at=float(document["expires_at"]),
                uses_left=int(document["uses_left"]),
            ),
        )


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(_SECRET_DOMAIN + secret.encode("ascii")).hexdigest()


class EnrollmentTokens:
    """Creates, redeems, lists and revokes enrollment tokens kept in a :class:`Store`."""

    def __init__(
        self, store: Store, *, clock: Clock = time.time, retention: float = DEFAULT_RETENTION
    ) -> None:
        self._store = store
        self._clock = clock
        self._retention = retention

    def create(
        self,
        tenant: str,
        roles: Iterable[Role | str],
        ttl: float,
        uses: int = 1,
        *,
        now: float | None = None,
    ) -> CreatedToken:
        """A new token for ``tenant`` granting ``roles``, valid ``ttl`` seconds, ``uses`` times."""
        check_name("tenant", tenant)
        granted = frozenset(Role.parse(role) for role in roles)
        if not granted:
            raise ValueError("a token must grant at least one role")
        if not ttl > 0:
            raise ValueError("token ttl must be positive")
        if isinstance(uses, bool) or not isinstance(uses, int) or uses < 1:
            raise ValueError("a token must allow at least one use")
        created_at = self._clock() if now is None else now
        token_id = secrets.token_hex(8)
        secret = base64.b32encode(secrets.token_bytes(32)).decode("ascii").rstrip("=").lower()
        info = TokenInfo(
            token_id=token_id,
            tenant=tenant,
            roles=granted,
            created_at=created_at,
            expires_at=created_at + ttl,
            uses_left=uses,
        )
        record = _Record(secret_hash=_hash_secret(secret), info=info)
        lease = self._store.grant_lease(ttl + self._retention)
        result = self._store.put_if(KEY_PREFIX + token_id, record.encode(), 0, lease=lease)
        if not result.succeeded:  # 64 random bits collided: astronomically unlikely
            self._store.revoke(lease)
            raise RuntimeError("token id collision; try again")
        return CreatedToken(token=f"{TOKEN_PREFIX}_{token_id}_{secret}", info=info)

    def redeem(self, token: str, now: float | None = None) -> TokenInfo:
        """Spend one use of ``token``; the token's grant (``uses_left`` after this use).

        Raises :class:`BadTokenError`, :class:`TokenExpiredError` or
        :class:`TokenUsedUpError`.  Atomic: of N concurrent redeems of a token with k uses
        left, exactly min(N, k) succeed.
        """
        if now is None:
            now = self._clock()
        match = _TOKEN_PATTERN.fullmatch(token.strip()) if isinstance(token, str) else None
        if match is None:
            raise BadTokenError("not an enrollment token (expected aft1_<id>_<secret>)")
        token_id, secret = match.groups()
        key = KEY_PREFIX + token_id
        entry = self._store.get(key)
        for _ in range(MAX_CAS_ATTEMPTS):
            entry, record = self._authenticate(token_id, secret, entry)
            if now >= record.info.expires_at:
                raise TokenExpiredError(f"enrollment token {token_id} has expired")
            if record.info.uses_left <= 0:
                raise TokenUsedUpError(f"enrollment token {token_id} has no uses left")
            spent = _Record(
                secret_hash=record.secret_hash,
                info=replace(record.info, uses_left=record.info.uses_left - 1),
            )
            try:
                result = self._store.put_if(
                    key, spent.encode(), entry.mod_revision, lease=entry.lease_id
                )
            except LeaseNotFoundError:
                raise BadTokenError(f"enrollment token {token_id} is unknown") from None
            if result.succeeded:
                return spent.info
            entry = result.current  # someone else redeemed (or revoked) it first: re-check
        raise TokenError(f"enrollment token {token_id} is contended; try again")

    def peek(self, token: str, now: float | None = None) -> TokenInfo:
        """The grant of ``token`` without spending a use (used up or not); the errors of
        :meth:`redeem` but :class:`TokenUsedUpError`."""
        when = self._clock() if now is None else now
        match = _TOKEN_PATTERN.fullmatch(token.strip()) if isinstance(token, str) else None
        if match is None:
            raise BadTokenError("not an enrollment token (expected aft1_<id>_<secret>)")
        token_id, secret = match.groups()
        _, record = self._authenticate(token_id, secret, self._store.get(KEY_PREFIX + token_id))
        if when >= record.info.expires_at:
            raise TokenExpiredError(f"enrollment token {token_id} has expired")
        return record.info

    @staticmethod
    def _authenticate(token_id: str, secret: str, entry: Entry | None) -> tuple[Entry, _Record]:
        if entry is None:
            raise BadTokenError(f"enrollment token {token_id} is unknown")
        record = _Record.decode(token_id, entry.value)
        if not hmac.compare_digest(record.secret_hash, _hash_secret(secret)):
            raise BadTokenError(f"enrollment token {token_id} is unknown")
        return entry, record

    def list(self) -> list[TokenInfo]:
        """Every stored token (none of their secrets), by id."""
        return [
            _Record.decode(entry.key.removeprefix(KEY_PREFIX), entry.value).info
            for entry in self._store.range(KEY_PREFIX).entries
        ]

    def revoke(self, token_id: str) -> bool:
        """Delete a token; False if there was none."""
        return self._store.delete(KEY_PREFIX + token_id) is not None
