"""What every hop runs on a signed object before trusting it, with no network and no store.

Checks run in a fixed order and the first failure is the reason: framing and type
(``malformed``, ``wrong_type``), signature (``forged``), validity window
(``not_yet_valid``, ``expired``), epoch (``stale_epoch``), then the request: hop, service,
traffic class.  ``now`` is Unix time in seconds (``time.time()``).
"""

from __future__ import annotations

from typing import TypeVar

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.objects import AccessPolicy, NodeRecord, RouteLease, ServiceLease
from accessfabric.control.kernel.rejections import (
    LeaseRejected,
    NodeRecordRejected,
    RejectReason,
    SignedObjectRejected,
)
from accessfabric.control.kernel.signed import open_signed
from accessfabric.wire.registry import TrafficClass

DEFAULT_CLOCK_SKEW = 5.0
"""Seconds a lease may appear to be issued in the future (the issuer's clock runs ahead).

Expiry gets no such allowance: a lease is never used past ``expires_ms`` by the hop's clock.
"""

_T = TypeVar("_T", NodeRecord, RouteLease, ServiceLease, AccessPolicy)


def _open(blob: bytes, kind: type[_T], key: bytes, error: type[SignedObjectRejected]) -> _T:
    try:
        return open_signed(blob, kind, key)
    except SignedObjectRejected as exc:
        raise error(exc.reason, exc.detail) from None


def _check_window(
    issued_ms: int,
    expires_ms: int,
    now: float,
    clock_skew: float,
    what: str,
    error: type[SignedObjectRejected],
) -> None:
    now_ms = int(now * 1000)
    if now_ms + int(clock_skew * 1000) < issued_ms:
        raise error(
            RejectReason.NOT_YET_VALID,
            f"{what} is valid from {issued_ms} ms (Unix), it is {now_ms} ms here",
        )
    if now_ms >= expires_ms:
        raise error(
            RejectReason.EXPIRED,
            f"{what} expired at {expires_ms} ms (Unix), it is {now_ms} ms here",
        )


def _check_epoch(epoch: int, min_epoch: int, what: str) -> None:
    if epoch < min_epoch:
        raise LeaseRejected(
            RejectReason.STALE_EPOCH,
            f"{what} has epoch {epoch}, but epoch {min_epoch} has been seen (fenced)",
        )


def verify_route_lease(
    blob: bytes,
    authority_public_key: bytes,
    now: float,
    *,
    hop: str | None = None,
    service: str | None = None,
    traffic_class: TrafficClass | None = None,
    min_epoch: int = 0,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> RouteLease:
    """The route lease in ``blob`` if it lets ``hop`` carry ``service`` in ``traffic_class``.

    Pass ``min_epoch=fence.epoch`` from the route's
    :class:`~accessfabric.control.kernel.fence.EpochFence`; ``None`` skips the hop, service or
    class check.  Raises :class:`LeaseRejected` with the first failing reason.
    """
    lease = _open(blob, RouteLease, authority_public_key, LeaseRejected)
    what = f"route lease {lease.lease_id.hex()} (route {lease.route_id}, epoch {lease.epoch})"
    _check_window(lease.issued_ms, lease.expires_ms, now, clock_skew, what, LeaseRejected)
    _check_epoch(lease.epoch, min_epoch, what)
    if hop is not None and _canonical(hop) not in lease.hops:
        raise LeaseRejected(RejectReason.HOP_NOT_ON_ROUTE, f"{hop} is not a hop of {what}")
    if service is not None and service not in lease.allowed_services:
        allowed = ", ".join(sorted(lease.allowed_services)) or "none"
        raise LeaseRejected(
            RejectReason.SERVICE_NOT_ALLOWED,
            f"service {service!r} is not allowed on {what} (allowed: {allowed})",
        )
    if traffic_class is not None and traffic_class not in lease.allowed_classes:
        allowed = ", ".join(c.name.lower() for c in sorted(lease.allowed_classes)) or "none"
        raise LeaseRejected(
            RejectReason.CLASS_NOT_ALLOWED,
            f"traffic class {TrafficClass(traffic_class).name.lower()} is not allowed on "
            f"{what} (allowed: {allowed})",
        )
    return lease


def verify_service_lease(
    blob: bytes,
    authority_public_key: bytes,
    now: float,
    *,
    service: str | None = None,
    min_epoch: int = 0,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> ServiceLease:
    """The service lease in ``blob`` if it is valid, for ``service``, and not fenced."""
    lease = _open(blob, ServiceLease, authority_public_key, LeaseRejected)
    what = f"service lease of {lease.service!r} on {lease.replica} (epoch {lease.epoch})"
    _check_window(lease.issued_ms, lease.expires_ms, now, clock_skew, what, LeaseRejected)
    _check_epoch(lease.epoch, min_epoch, what)
    if service is not None and service != lease.service:
        raise LeaseRejected(
            RejectReason.SERVICE_NOT_ALLOWED, f"{what} does not cover service {service!r}"
        )
    return lease


def verify_node_record(
    blob: bytes,
    authority_public_key: bytes,
    now: float,
    *,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> NodeRecord:
    """The node record in ``blob`` if the authority signed it and it is valid at ``now``.

    The caller compares ``record.node_id`` with the identity the peer proved in AUTH.
    """
    record = _open(blob, NodeRecord, authority_public_key, NodeRecordRejected)
    what = f"node record of {record.node_id} (revision {record.revision})"
    _check_window(record.issued_ms, record.expires_ms, now, clock_skew, what, NodeRecordRejected)
    return record


def _canonical(node_id: str) -> str:
    try:
        return canonical_node_id(node_id)
    except ValueError:
        return node_id  # a malformed id is on no route


def verify_access_policy(
    blob: bytes,
    authority_public_key: bytes,
    now: float,
    *,
    host: str,
    min_revision: int = 0,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> AccessPolicy:
    """The access policy in ``blob`` if the authority signed it for ``host``, it is valid at
    ``now`` and no older than ``min_revision`` (the revision this host holds already).

    Raises :class:`SignedObjectRejected`: ``stale_epoch`` for an older revision (a replay),
    ``hop_not_on_route`` for another host's policy."""
    policy = _open(blob, AccessPolicy, authority_public_key, SignedObjectRejected)
    what = f"access policy of {policy.host} (revision {policy.revision})"
    _check_window(policy.issued_ms, policy.expires_ms, now, clock_skew, what, SignedObjectRejected)
    if policy.revision < min_revision:
        raise SignedObjectRejected(
            RejectReason.STALE_EPOCH,
            f"{what} is older than revision {min_revision}, which this node holds",
        )
    if policy.host != _canonical(host):
        raise SignedObjectRejected(
            RejectReason.HOP_NOT_ON_ROUTE, f"{what} is not for this node ({host})"
        )
    return policy
