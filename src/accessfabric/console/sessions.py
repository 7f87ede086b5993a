"""Console logins: stateless signed session cookies, CSRF tokens and a login rate limit.

A session cookie is ``expires.nonce.mac`` where the MAC is HMAC-SHA256 under a key derived
from the console's admin credential: every replica holding the same credential accepts it,
so a browser stays logged in when the replica serving it fails over.  Nothing is stored
per session (a replica restart or failover loses nothing); sessions end when they expire,
or all at once when the credential changes.  The CSRF token of a session is a second MAC
over its nonce; actions must carry it in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "af_console"
DEFAULT_SESSION_TTL = 3600.0
LOGIN_ATTEMPTS = 10
"""Failed logins per client address per :data:`LOGIN_WINDOW` before more are refused."""
LOGIN_WINDOW = 60.0
MAX_TRACKED_CLIENTS = 1024


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    nonce: str
    expires: float
    csrf: str


class SessionSigner:
    def __init__(self, credential: str, ttl: float = DEFAULT_SESSION_TTL) -> None:
        self._key = hmac.new(
            credential.encode(), b"accessfabric console session v1", hashlib.sha256
        ).digest()
        self.ttl = ttl

    def _mac(self, label: str, text: str) -> str:
        return hmac.new(self._key, f"{label}|{text}".encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> tuple[str, ConsoleSession]:
        """A new session: the cookie value and what it stands for."""
        expires = int((time.time() if now is None else now) + self.ttl)
        nonce = secrets.token_hex(16)
        payload = f"{expires}.{nonce}"
        session = ConsoleSession(nonce=nonce, expires=expires, csrf=self._mac("csrf", nonce))
        return f"{payload}.{self._mac('session', payload)}", session

    def check(self, cookie: str | None, now: float | None = None) -> ConsoleSession | None:
        """The session a cookie stands for, or None (absent, forged, malformed or expired)."""
        if not cookie or len(cookie) > 256:
            return None
        payload, _, mac = cookie.rpartition(".")
        expires_text, _, nonce = payload.partition(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            expires = float(int(expires_text))
        except ValueError:
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return ConsoleSession(nonce=nonce, expires=expires, csrf=self._mac("csrf", nonce))


class LoginLimiter:
    """At most :data:`LOGIN_ATTEMPTS` failed logins per client per window (bounded table)."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def allowed(self, client: str, now: float) -> bool:
        recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW]
        return len(recent) < LOGIN_ATTEMPTS

    def failed(self, client: str, now: float) -> None:
        recent = [t for t in self._failures.pop(client, []) if now - t < LOGIN_WINDOW]
        self._failures[client] = [*recent, now][-LOGIN_ATTEMPTS:]
        while len(self._failures) > MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)
