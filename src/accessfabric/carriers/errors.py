"""Carrier outcomes that are not endpoint failures, and pin failures that are.

Endpoint ranking treats them differently: :class:`CarrierCapacityLimited` is a soft,
bounded penalty (the endpoint works, it is full), while :class:`CertificatePinMismatch`
means the endpoint answered as somebody else and must not be used for that peer.
"""

from __future__ import annotations

from accessfabric.errors import IdentityMismatchError


class CarrierCapacityLimited(Exception):
    """The carrier refused a new session for capacity: a per-connection stream limit.

    Not an ``OSError``: dial code that treats ``OSError`` as *endpoint down* must not
    catch it.  ``limit`` is the limit that was hit; ``remote`` is true when the peer
    refused the stream, false when the local pool did.
    """

    def __init__(self, endpoint: str, limit: int | None, *, remote: bool) -> None:
        where = "peer" if remote else "local pool"
        shown = "?" if limit is None else str(limit)
        super().__init__(f"{endpoint}: stream limit {shown} reached ({where})")
        self.endpoint = endpoint
        self.limit = limit
        self.remote = remote


class CertificatePinMismatch(IdentityMismatchError):
    """The peer's TLS certificate is not the pinned one (fingerprint or node id).

    Raised before any fabric byte is exchanged; the carrier connection is closed.
    """
