"""Relay quotas, rate limits and accounting: who relayed which class, how many bytes.

* concurrent relayed streams per tenant and per traffic class;
* relay bandwidth per tenant and per class (token buckets from
  :mod:`accessfabric.identity.ratelimit`, bytes per second);
* route churn: relayed stream opens (and resumes) per tenant per second;
* **relay bytes per tenant** (a quota, ADR 0038): at most ``tenant_bytes_quota`` bytes
  (both directions together) per tenant per ``quota_window`` seconds.  A stream opened
  while the tenant's window is spent is refused; a chunk that would take the tenant past
  it is not relayed and the stream is reset (both ends), so the quota is a hard bound
  within one window.  The window is fixed (:meth:`RelayQuotas._window`: it starts with
  the tenant's first open or chunk after the last one ended), not sliding: around a
  window's end a tenant may move up to twice the quota within ``quota_window`` seconds.

Tenant quota refusals (``tenant_streams``, ``tenant_bytes``) reset the stream with
``ENHANCE_YOUR_CALM``: the tenant is over what this node gives it, not the path broken,
so the source does not resume the stream elsewhere as it does after ``ROUTE_REJECTED``
(which the other refusals keep: another relay may have room for that class or churn).

The tenant is the one the stream's signed route lease names (the source's tenant, see
:class:`~accessfabric.control.kernel.objects.RouteLease`).  Accounting is per (tenant, class):
streams, bytes each way, refusals by reason.  Never a
payload byte, never a stream id or a resume token.  :mod:`accessfabric.node.relaying.relay_metrics`
exports it on ``/metrics`` and in the node's status.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from accessfabric.errors import ErrorCode
from accessfabric.identity.ratelimit import KeyedRateLimiter, TokenBucket
from accessfabric.wire.registry import TrafficClass

DEFAULT_MAX_STREAMS_PER_TENANT = 256
DEFAULT_QUOTA_WINDOW = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    max_streams_per_tenant: int = DEFAULT_MAX_STREAMS_PER_TENANT
    max_streams_per_class: dict[TrafficClass, int] = field(
        default_factory=lambda: dict.fromkeys(TrafficClass, 1024)
    )
    tenant_bytes_per_second: float = 1e12
    """Relay bandwidth per tenant (default: effectively unlimited)."""
    class_bytes_per_second: dict[TrafficClass, float] = field(default_factory=dict)
    """Relay bandwidth per class; a class not listed is unlimited."""
    burst_seconds: float = 0.25
    """Bucket depth in seconds of the rate (at least one relay chunk)."""
    opens_per_second: float = 50.0
    """Route churn: relayed opens and resumes per tenant per second."""
    opens_burst: float = 100.0
    tenant_bytes_quota: int = 0
    """Bytes one tenant may have relayed (both directions) per ``quota_window``; 0: none."""
    quota_window: float = DEFAULT_QUOTA_WINDOW


TENANT_REASONS = frozenset({"tenant_streams", "tenant_bytes"})


class RelayRefused(Exception):
    """A quota refused a relayed stream; ``reason`` is a stable metric label, ``code``
    the stream reset's (``ENHANCE_YOUR_CALM`` for tenant quotas, else ``ROUTE_REJECTED``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.code = (
            ErrorCode.ENHANCE_YOUR_CALM if reason in TENANT_REASONS else ErrorCode.ROUTE_REJECTED
        )


@dataclass(slots=True)
class _Window:
    """One tenant's relay-bytes quota window: when it began, bytes relayed in it."""

    start: float
    used: int = 0
    spent: bool = False
    """A chunk was refused: the tenant gets nothing more here until the window ends."""


@dataclass(slots=True)
class _Usage:
    streams: int = 0
    active: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resumes: int = 0


class RelayQuotas:
    """Admission and pacing of relayed streams, and their accounting."""

    MIN_BURST = 256 * 1024

    def __init__(self, limits: RelayLimits | None = None) -> None:
        self.limits = limits = limits or RelayLimits()
        self._churn = KeyedRateLimiter(limits.opens_per_second, limits.opens_burst)
        self._tenant_buckets: dict[str, TokenBucket] = {}
        self._class_buckets: dict[TrafficClass, TokenBucket] = {
            cls: TokenBucket(rate, max(self.MIN_BURST, rate * limits.burst_seconds))
            for cls, rate in limits.class_bytes_per_second.items()
        }
        self._active_tenant: Counter[str] = Counter()
        self._active_class: Counter[TrafficClass] = Counter()
        self.usage: dict[tuple[str, TrafficClass], _Usage] = {}
        self.refused: Counter[tuple[str, str]] = Counter()
        self._windows: dict[str, _Window] = {}

    def _window(self, tenant: str, now: float) -> _Window:
        window = self._windows.get(tenant)
        if window is None or now - window.start >= self.limits.quota_window:
            window = self._windows[tenant] = _Window(now)
        return window

    def _bytes_refusal(self, tenant: str, what: str) -> RelayRefused:
        limits = self.limits
        return RelayRefused(
            "tenant_bytes",
            f"tenant {tenant} {what}: quota {limits.tenant_bytes_quota} bytes"
            f" per {limits.quota_window:g} s",
        )

    def admit(self, tenant: str, traffic_class: TrafficClass, *, resume: bool) -> None:
        """Count one relayed stream in, or raise :class:`RelayRefused`."""
        limits = self.limits
        try:
            if not self._churn.take(tenant, time.monotonic()):
                raise RelayRefused(
                    "route_churn", f"tenant {tenant} opens more than {limits.opens_per_second:g}/s"
                )
            quota = limits.tenant_bytes_quota
            window = self._window(tenant, time.monotonic()) if quota else None
            if window is not None and (window.spent or window.used >= quota):
                raise self._bytes_refusal(tenant, "relayed its quota already")
            if self._active_tenant[tenant] >= limits.max_streams_per_tenant:
                raise RelayRefused(
                    "tenant_streams",
                    f"tenant {tenant} relays {limits.max_streams_per_tenant} streams already",
                )
            cap = limits.max_streams_per_class.get(traffic_class, 0)
            if self._active_class[traffic_class] >= cap:
                name = traffic_class.name.lower()
                raise RelayRefused("class_streams", f"{cap} {name} streams relayed already")
        except RelayRefused as refused:
            self.refused[(tenant, refused.reason)] += 1
            raise
        self._active_tenant[tenant] += 1
        self._active_class[traffic_class] += 1
        usage = self._usage(tenant, traffic_class)
        usage.streams += 1
        usage.active += 1
        usage.resumes += int(resume)

    def release(self, tenant: str, traffic_class: TrafficClass) -> None:
        self._active_tenant[tenant] -= 1
        self._active_class[traffic_class] -= 1
        self._usage(tenant, traffic_class).active -= 1

    def _usage(self, tenant: str, traffic_class: TrafficClass) -> _Usage:
        key = (tenant, traffic_class)
        usage = self.usage.get(key)
        if usage is None:
            usage = self.usage[key] = _Usage()
        return usage

    def chunk_limit(self, tenant: str, traffic_class: TrafficClass) -> int:
        """The largest relay chunk the buckets can ever grant at once."""
        buckets = [self._tenant_bucket(tenant), self._class_buckets.get(traffic_class)]
        return int(min(b.burst for b in buckets if b is not None))

    def _tenant_bucket(self, tenant: str) -> TokenBucket:
        bucket = self._tenant_buckets.get(tenant)
        if bucket is None:
            rate = self.limits.tenant_bytes_per_second
            burst = max(self.MIN_BURST, rate * self.limits.burst_seconds)
            bucket = self._tenant_buckets[tenant] = TokenBucket(rate, burst)
        return bucket

    async def spend(
        self, tenant: str, traffic_class: TrafficClass, nbytes: int, *, upstream: bool
    ) -> None:
        """Wait until the tenant's and the class's buckets allow ``nbytes``; account them.

        Raises :class:`RelayRefused` (``tenant_bytes``) when ``nbytes`` would take the
        tenant past its quota window: the caller resets the stream, nothing is relayed."""
        quota = self.limits.tenant_bytes_quota
        if quota:
            window = self._window(tenant, time.monotonic())
            if window.spent or window.used + nbytes > quota:
                window.spent = True
                self.refused[(tenant, "tenant_bytes")] += 1
                raise self._bytes_refusal(tenant, "would pass its quota")
            window.used += nbytes  # taken before the wait: concurrent pumps cannot overrun
        for bucket in (self._tenant_bucket(tenant), self._class_buckets.get(traffic_class)):
            if bucket is None:
                continue
            while not bucket.take(time.monotonic(), nbytes):
                missing = nbytes - bucket.tokens(time.monotonic())
                await asyncio.sleep(max(0.001, missing / max(bucket.rate, 1.0)))
        usage = self._usage(tenant, traffic_class)
        if upstream:
            usage.bytes_up += nbytes
        else:
            usage.bytes_down += nbytes

    def counters(self) -> dict[str, object]:
        """Accounting as plain data (tenant -> class -> counters; refusals by reason)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (tenant, cls), usage in sorted(self.usage.items()):
            out.setdefault(tenant, {})[cls.name.lower()] = {
                "streams": usage.streams,
                "active": usage.active,
                "resumes": usage.resumes,
                "bytes_from_source": usage.bytes_up,
                "bytes_to_source": usage.bytes_down,
            }
        refused = {f"{tenant}/{reason}": n for (tenant, reason), n in sorted(self.refused.items())}
        return {"relayed": out, "refused": refused, "quota": self.quota_status()}

    def quota_status(self) -> list[dict[str, Any]]:
        """Per tenant with relay bytes in the current quota window: used, quota, time left
        (empty without a quota)."""
        limits = self.limits
        if not limits.tenant_bytes_quota:
            return []
        now = time.monotonic()
        return [
            {
                "tenant": tenant,
                "bytes": window.used,
                "quota": limits.tenant_bytes_quota,
                "window_left_s": round(limits.quota_window - (now - window.start), 1),
            }
            for tenant, window in sorted(self._windows.items())
            if now - window.start < limits.quota_window
        ]
