"""Dial a peer through its ranked endpoint candidates: :class:`RankedPeerDialer`.

A peer's configured endpoints become :class:`EndpointCandidate` s (transport from the
URL scheme: ``tcp://`` tcp_tls, ``wss://`` websocket, ``quic://`` direct_quic,
``https://`` https_fallback), are ranked by one node-wide :class:`EndpointRanker` and
walked by :func:`dial_ranked`: a failure demotes a candidate for its backoff (it stays a
later fallback and is first again once the backoff ends, if policy prefers it), a QUIC
stream-limit refusal is capacity pressure (:class:`CapacityLimitedError`), not a
failure.  One QUIC connection pool is shared by all peers.

When every candidate failed, a peer that answered as someone else on some endpoint
(certificate pin or node id) gives :class:`PeerPinMismatchError`; otherwise
:class:`PeerUnreachableError`.  :func:`dial_metric_samples` turns :class:`DialCounters`
into (name, labels, value) samples for ``observe/metrics.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from accessfabric.carriers.errors import CarrierCapacityLimited
from accessfabric.carriers.quic_config import QuicCarrierConfig
from accessfabric.errors import IdentityMismatchError
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import DEFAULT_DIAL_TIMEOUT, dial
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.peers import PeerUnreachableError
from accessfabric.node.dialing.quic_pool import QuicConnectionPool
from accessfabric.node.dialing.ranking import (
    EndpointCandidate,
    EndpointRanker,
    RankingPolicy,
    Transport,
)
from accessfabric.node.dialing.ranking.dialing import (
    AllCandidatesFailed,
    CapacityLimitedError,
    DialAttempt,
    DialCounters,
    dial_ranked,
)
from accessfabric.node.dialing.ranking.scoring import RankedCandidate
from accessfabric.node.dialing.throughput_meter import meter_session
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.observe.log_format import log_event
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

TRANSPORT_OF_CARRIER = {
    "tcp": Transport.TCP_TLS,
    "websocket": Transport.WEBSOCKET,
    "quic": Transport.DIRECT_QUIC,
    "https": Transport.HTTPS_FALLBACK,
}
Sample = tuple[str, dict[str, str], float]


class PeerPinMismatchError(IdentityMismatchError):
    """No candidate gave a session, and at least one answered as another node.

    ``attempts`` holds every candidate's outcome; ``pin_failures`` those that failed the
    pin (node id or certificate fingerprint).  Distinct from an unreachable peer: retrying
    does not help, the directory or the endpoint is wrong (or someone is in the middle).
    """

    def __init__(self, node_id: str, attempts: Sequence[DialAttempt], pins: Sequence[str]):
        super().__init__(f"peer {node_id}: endpoint(s) answered as another node: {'; '.join(pins)}")
        self.node_id = node_id
        self.attempts = tuple(attempts)
        self.pin_failures = tuple(pins)


def endpoint_candidate(
    endpoint: Endpoint, node_id: str | None, fingerprint: str | None = None
) -> EndpointCandidate:
    """The candidate for a configured endpoint (``KeyError``: unknown carrier)."""
    return EndpointCandidate(
        transport=TRANSPORT_OF_CARRIER[endpoint.carrier],
        address=endpoint.url,
        node_id=node_id,
        fingerprint=fingerprint,
    )


class RankedPeerDialer:
    """Node-wide ranker, counters and QUIC pool; :meth:`open` is a ``PeerOpener``."""

    def __init__(
        self,
        local: LocalNode,
        *,
        policy: RankingPolicy | None = None,
        timeout: float = DEFAULT_DIAL_TIMEOUT,
        quic_config: QuicCarrierConfig | None = None,
    ) -> None:
        self.local = local
        self.ranker = EndpointRanker(policy)
        self.counters = DialCounters()
        self.quic_pool = QuicConnectionPool(quic_config or QuicCarrierConfig())
        self.timeout = timeout
        self._meters: set[asyncio.Task[None]] = set()

    def rank(
        self,
        node_id: str,
        endpoints: Sequence[Endpoint],
        traffic_class: TrafficClass | None = None,
    ) -> list[RankedCandidate]:
        """The peer's candidates, best first, with scores and reasons (for status)."""
        candidates = [endpoint_candidate(e, node_id) for e in endpoints]
        return self.ranker.rank(candidates, asyncio.get_running_loop().time(), traffic_class)

    async def open(
        self,
        node_id: str,
        endpoints: Sequence[Endpoint],
        traffic_class: TrafficClass | None = None,
    ) -> tuple[SessionConnection, str]:
        """(ready session, endpoint URL) to ``node_id`` over the best candidate that works."""
        by_address = {endpoint.url: endpoint for endpoint in endpoints}
        errors: dict[str, BaseException] = {}
        ranked = self.rank(node_id, endpoints, traffic_class)

        async def dial_one(candidate: EndpointCandidate) -> SessionConnection:
            fingerprint = bytes.fromhex(candidate.fingerprint) if candidate.fingerprint else None
            try:
                return await dial(
                    self.local, by_address[candidate.address], expected_peer_id=node_id,
                    timeout=self.timeout, quic_pool=self.quic_pool,
                    certificate_fingerprint=fingerprint,
                )  # fmt: skip
            except CarrierCapacityLimited as error:
                errors[candidate.address] = error
                raise CapacityLimitedError(str(error)) from error
            except Exception as error:
                errors[candidate.address] = error
                raise

        adapter = logging.LoggerAdapter(log, {"peer": node_id})
        try:
            connection, attempts = await dial_ranked(
                ranked, dial_one, log=adapter, ranker=self.ranker, counters=self.counters,
                clock=asyncio.get_running_loop().time,
            )  # fmt: skip
        except AllCandidatesFailed as failure:
            raise self._failure(node_id, failure, by_address, errors) from None
        chosen = attempts[-1].candidate
        meter = asyncio.create_task(meter_session(connection, chosen.transport, self.ranker))
        self._meters.add(meter)
        meter.add_done_callback(self._meters.discard)
        fallback = chosen.transport is Transport.HTTPS_FALLBACK
        log_event(
            log, "peer dial selected", logging.WARNING if fallback else logging.INFO,
            peer=node_id, endpoint=chosen.address, transport=chosen.transport.value,
            pinned=chosen.pinned, fallback=fallback, attempts=len(attempts),
            fallbacks_left=len(ranked) - len(attempts),
            remaining=",".join(r.candidate.label() for r in ranked[len(attempts):]) or "-",
        )  # fmt: skip
        return connection, chosen.address

    @staticmethod
    def _failure(
        node_id: str,
        failure: AllCandidatesFailed,
        by_address: dict[str, Endpoint],
        errors: dict[str, BaseException],
    ) -> Exception:
        pins = [
            f"{a.candidate.label()}: {a.reason}"
            for a in failure.attempts
            if isinstance(errors.get(a.candidate.address), IdentityMismatchError)
        ]
        if pins:
            return PeerPinMismatchError(node_id, failure.attempts, pins)
        pairs = [
            (by_address[a.candidate.address], errors.get(a.candidate.address, failure))
            for a in failure.attempts
        ]
        return PeerUnreachableError(node_id, pairs)

    async def aclose(self) -> None:
        meters = list(self._meters)
        for meter in meters:
            meter.cancel()
        await asyncio.gather(*meters, return_exceptions=True)
        await self.quic_pool.aclose()


def dial_metric_samples(counters: DialCounters, prefix: str = "accessfabric_dial") -> list[Sample]:
    """(name, labels, value) for every dial counter; counters end in ``_total``.

    Labels are bounded: ``kind`` (exception type names, at most 32 then ``other``),
    ``transport`` (four values) and ``fallback``.  The last failure reason is free text
    and stays out of the samples (status shows ``counters.last_failure_reason``).
    """
    samples: list[Sample] = [
        (f"{prefix}_attempts_total", {}, float(counters.attempts)),
        (f"{prefix}_successes_total", {}, float(counters.successes)),
        (f"{prefix}_capacity_limited_total", {}, float(counters.capacity_limited)),
        (f"{prefix}_exhausted_total", {}, float(counters.exhausted)),
        (f"{prefix}_pinned_selections_total", {}, float(counters.pinned_selections)),
    ]
    for kind, count in sorted(counters.failures_by_kind.items()):
        samples.append((f"{prefix}_candidate_failures_total", {"kind": kind}, float(count)))
    for transport in Transport:
        count = counters.selected_by_transport.get(transport.value, 0)
        labels = {
            "transport": transport.value,
            "fallback": "true" if transport is Transport.HTTPS_FALLBACK else "false",
        }
        samples.append((f"{prefix}_selected_total", labels, float(count)))
    return samples
