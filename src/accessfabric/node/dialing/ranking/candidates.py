"""What a node advertises it can be dialed on: an :class:`EndpointCandidate` per transport."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_ADDRESS_LENGTH = 512


class Transport(StrEnum):
    """The carrier a candidate is dialed over, as named in the peer directory."""

    DIRECT_QUIC = "direct_quic"
    TCP_TLS = "tcp_tls"
    WEBSOCKET = "websocket"
    HTTPS_FALLBACK = "https_fallback"


CandidateKey = tuple[str | None, Transport, str]
"""(node id, transport, address): what health is tracked by.  A rotated certificate keeps
the endpoint's history; a new address or transport starts a fresh one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointCandidate:
    """One way to reach a node: ``transport`` to ``address`` (``host:port`` or a URL).

    ``fingerprint`` is the SHA-256 of the certificate the dialer pins (hex), when the
    node advertises one; ``metadata`` holds any other advertised facts as sorted
    ``(name, value)`` pairs so the candidate stays hashable.
    """

    transport: Transport
    address: str
    node_id: str | None = None
    fingerprint: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.transport, Transport):
            object.__setattr__(self, "transport", Transport(self.transport))
        if not self.address or len(self.address) > MAX_ADDRESS_LENGTH:
            raise ValueError(f"endpoint address must be 1..{MAX_ADDRESS_LENGTH} characters")
        object.__setattr__(self, "metadata", tuple(sorted(self.metadata)))

    @property
    def key(self) -> CandidateKey:
        return (self.node_id, self.transport, self.address)

    @property
    def pinned(self) -> bool:
        """Whether dialing pins something beyond the CA: the certificate or the node id."""
        return self.fingerprint is not None or self.node_id is not None

    def label(self) -> str:
        """``transport address`` for logs and status."""
        return f"{self.transport.value} {self.address}"
