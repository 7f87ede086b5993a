"""``Admission``: what an outsider may cost this node before and after it authenticates.

One object per node, shared by every listener and session (docs/node.md "Flood
defences", ADR 0017):

* **Un-handshaken connections** are capped in total (``max_pending_handshakes``) and per
  source address (``max_pending_handshakes_per_address``); a connection beyond a cap is
  closed at accept, before any TLS work.  Each one admitted holds its slot until its TLS
  handshake ends, which the listener bounds by ``handshake_timeout``.
* **A global handshake budget**: a token bucket (``handshakes_per_second``,
  ``handshake_burst``) that every accepted connection spends one token of, so a swarm of
  addresses cannot buy unbounded TLS + AUTH CPU.
* **Failed AUTH**: a strict bucket per (source address, claimed node id) and a looser one
  per address.  A key that keeps failing locks out itself at that address, not the other
  nodes behind the same NAT; only a whole address failing with many keys is refused at
  accept.  The strict check runs before the signature is verified (no CPU spent).
* **Refused streams**: every refused OPEN_STREAM charges a bucket of the peer's node id and
  one of its address, across sessions; when either is empty the session gets GOAWAY
  ``ENHANCE_YOUR_CALM`` and new sessions of that peer (and, for the address bucket, new
  connections from that address) are refused until it refills.

Every refusal is logged through :class:`RateLimitedLog`: at most one line per
``log_interval`` per (peer or address, reason), with the count of lines suppressed.
Nothing here reads a clock: callers pass ``now`` (the event loop's time).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from accessfabric.identity.ratelimit import KeyedRateLimiter, TokenBucket
from accessfabric.node.relaying import relay_limits
from accessfabric.node.serving import tenant_admission
from accessfabric.observe.log_rate import RateLimitedLog

log = logging.getLogger("accessfabric.node.serving.admission")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionLimits:
    """``[limits]`` in the node config (docs/config.md)."""

    max_pending_handshakes: int = 1024
    """Connections accepted whose TLS handshake has not finished, in total."""
    max_pending_handshakes_per_address: int = 128
    """The same, from one source address."""
    handshakes_per_second: float = 100.0
    """The global handshake budget's refill rate (TLS + AUTH, all addresses together;
    one costs about 3 ms of CPU here, so 100/s is under a third of a core)."""
    handshake_burst: float = 100.0
    """The global handshake budget's size."""
    auth_failures_per_key_burst: float = 10.0
    """Failed AUTHs one (address, claimed node id) may have before it is refused."""
    auth_failures_per_key_rate: float = 0.5
    """... and how many per second it is forgiven."""
    auth_failures_per_address_burst: float = 30.0
    """Failed AUTHs one address may have (all claimed ids together) before its new
    connections are refused at accept."""
    auth_failures_per_address_rate: float = 2.0
    refused_streams_per_peer_burst: float = 30.0
    """Refused OPEN_STREAMs one node id may cause, across all its sessions, before its
    session gets GOAWAY ENHANCE_YOUR_CALM and its new sessions are refused."""
    refused_streams_per_peer_rate: float = 0.2
    refused_streams_per_address_burst: float = 60.0
    """The same per source address (every node id behind it together)."""
    refused_streams_per_address_rate: float = 0.5
    log_interval: float = 10.0
    """At most one refusal line per (peer or address, reason) per this many seconds."""
    max_sessions_per_tenant: int = tenant_admission.DEFAULT_MAX_SESSIONS_PER_TENANT
    """Accepted sessions one tenant may hold (node/serving/tenant_admission.py)."""
    tenant_retry_after: float = tenant_admission.DEFAULT_TENANT_RETRY_AFTER
    """Seconds a peer refused by the tenant cap is told to wait (x 1..1.5)."""
    max_relay_streams_per_tenant: int = relay_limits.DEFAULT_MAX_STREAMS_PER_TENANT
    """Streams one tenant (the one its route lease names) may have relayed through this
    node at once: a device's streams through its entry count (node/relaying/relay_limits.py)."""
    relay_bytes_per_tenant: int = 0
    """Bytes one tenant may have relayed through this node per ``relay_bytes_window``
    (both directions); 0: no quota."""
    relay_bytes_window: float = relay_limits.DEFAULT_QUOTA_WINDOW

    def relay(self) -> relay_limits.RelayLimits:
        """The relay quotas these limits set (the rest at their defaults)."""
        return relay_limits.RelayLimits(
            max_streams_per_tenant=self.max_relay_streams_per_tenant,
            tenant_bytes_quota=self.relay_bytes_per_tenant,
            quota_window=self.relay_bytes_window,
        )


LIMIT_KEYS = tuple(AdmissionLimits.__dataclass_fields__)
RECONNECT_COST = 10.0
"""What a reconnect of a peer over its refused-stream budget takes from its address's
bucket: a few such reconnects and the address is refused at accept."""


class Admission:
    """The node's admission state: pending handshakes, budgets, buckets and refusal log."""

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits = limits or AdmissionLimits()
        self.pending = 0
        self._pending_by_address: Counter[str] = Counter()
        self._handshakes = TokenBucket(limits.handshakes_per_second, limits.handshake_burst)
        self.auth_failures_by_key = KeyedRateLimiter(
            limits.auth_failures_per_key_rate, limits.auth_failures_per_key_burst
        )
        self.auth_failures_by_address = KeyedRateLimiter(
            limits.auth_failures_per_address_rate, limits.auth_failures_per_address_burst
        )
        self.refusals_by_peer = KeyedRateLimiter(
            limits.refused_streams_per_peer_rate, limits.refused_streams_per_peer_burst
        )
        self.refusals_by_address = KeyedRateLimiter(
            limits.refused_streams_per_address_rate, limits.refused_streams_per_address_burst
        )
        self.refusal_log = RateLimitedLog(log, interval=limits.log_interval)
        self.refused: Counter[str] = Counter()
        """Refusals by reason (``pending handshakes``, ``rate limit``, ...): /metrics."""
        self.tenants = tenant_admission.TenantAdmission(
            limits.max_sessions_per_tenant, limits.tenant_retry_after,
            log_interval=limits.log_interval,
        )  # fmt: skip

    # ------------------------------------------------------------ accept

    def admit(self, address: str, now: float) -> bool:
        """Whether a new connection from ``address`` may start its TLS handshake.

        True reserves a pending slot: call :meth:`handshake_done` exactly once later."""
        limits = self.limits
        reason, per_address = None, True
        if self.pending >= limits.max_pending_handshakes:
            reason, per_address = "pending handshakes", False
        elif self._pending_by_address[address] >= limits.max_pending_handshakes_per_address:
            reason = "pending handshakes per address"
        elif not self.auth_failures_by_address.allows(address, now):
            reason = "rate limit"
        elif not self.refusals_by_address.allows(address, now):
            reason = "refused streams"
        elif not self._handshakes.take(now):
            reason, per_address = "handshake budget", False
        if reason is not None:
            self.refuse(address, reason, now, key=address if per_address else None)
            return False
        self.pending += 1
        self._pending_by_address[address] += 1
        return True

    def handshake_done(self, address: str, now: float, error: str | None = None) -> None:
        """Release ``address``'s pending slot; ``error`` names a failed handshake."""
        self.pending -= 1
        left = self._pending_by_address[address] - 1
        if left > 0:
            self._pending_by_address[address] = left
        else:
            del self._pending_by_address[address]
        if error is not None:
            self.refuse(address, "tls handshake", now, key=address, detail=error)

    def pending_from(self, address: str) -> int:
        return self._pending_by_address.get(address, 0)

    # ------------------------------------------------------------ AUTH

    def auth_allowed(self, address: str, claimed_id: str, now: float) -> bool:
        """Before verifying an AUTH: may (address, claimed node id) try again now?"""
        if self.auth_failures_by_key.allows(f"{address} {claimed_id}", now):
            return True
        self.refuse(address, "rate limit", now, key=(address, claimed_id), peer=claimed_id)
        return False

    def auth_failed(self, address: str, claimed_id: str | None, now: float) -> None:
        self.auth_failures_by_address.take(address, now)
        if claimed_id:
            self.auth_failures_by_key.take(f"{address} {claimed_id}", now)

    # ------------------------------------------------------------ refused streams

    def peer_allowed(self, peer_id: str, address: str, now: float) -> bool:
        """Whether an authenticated peer may keep a session (its refusals are not over).

        A refused reconnect charges the peer's address: a peer that keeps reconnecting
        is soon refused at accept, before its TLS handshake costs anything."""
        if self.refusals_by_peer.allows(peer_id, now):
            return True
        self.refusals_by_address.take(address, now, RECONNECT_COST)
        return False

    def stream_refused(self, peer_id: str | None, address: str, reason: str, now: float) -> bool:
        """Charge one refused stream; True when the peer or its address is now over."""
        over = not self.refusals_by_address.take(address, now)
        if peer_id is not None:
            over = not self.refusals_by_peer.take(peer_id, now) or over
        return over

    # ------------------------------------------------------------ logging

    def refuse(
        self,
        address: str,
        reason: str,
        now: float,
        *,
        key: object = None,
        peer: str | None = None,
        detail: str = "",
        level: int = logging.WARNING,
    ) -> None:
        """Count a refusal and log it (at most once per interval per key and reason)."""
        self.refused[reason] += 1
        self.refusal_log.log(
            (key, reason), level,
            "connection refused reason=%s address=%s peer=%s%s",
            reason, address, peer or "-", f" detail={detail}" if detail else "",
            now=now,
        )  # fmt: skip

    def prune(self, now: float) -> None:
        """Forget every bucket that has refilled (call now and then)."""
        for limiter in (
            self.auth_failures_by_key,
            self.auth_failures_by_address,
            self.refusals_by_peer,
            self.refusals_by_address,
        ):
            limiter.prune(now)
