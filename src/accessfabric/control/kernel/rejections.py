"""Why a hop refuses a signed object: one small enum, and the exceptions that carry it."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """The reason a signed object was refused (the values are stable: logs and metrics)."""

    MALFORMED = "malformed"
    """Not a canonical encoding of any signed object, or an unknown format version."""
    WRONG_TYPE = "wrong_type"
    """A valid encoding of another object type (e.g. a node record offered as a lease)."""
    FORGED = "forged"
    """The signature does not verify with the pinned authority key."""
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    STALE_EPOCH = "stale_epoch"
    """Fenced: a newer epoch of this route or service has been seen."""
    HOP_NOT_ON_ROUTE = "hop_not_on_route"
    SERVICE_NOT_ALLOWED = "service_not_allowed"
    CLASS_NOT_ALLOWED = "class_not_allowed"


class SignedObjectRejected(Exception):
    """A signed object failed verification; ``reason`` says why, ``str()`` says it clearly."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class LeaseRejected(SignedObjectRejected):
    """A route or service lease was refused."""


class NodeRecordRejected(SignedObjectRejected):
    """A node record was refused."""
