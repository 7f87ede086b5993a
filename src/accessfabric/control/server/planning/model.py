"""What the planner plans over: node facts, directional link observations, the fabric graph.

Everything here is a frozen value.  :class:`FabricGraph` is an immutable
snapshot built once from the latest heartbeats; a new snapshot is built when
the facts change (the planner keeps no mutable view of the fleet).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, field

from accessfabric.control.kernel.vocabulary import (
    Role as Role,  # one role vocabulary: the node record's
)

MAX_TRUST_TIER = 3
"""Trust tiers run from 0 (unvetted, e.g. a volunteer phone) to 3 (operator-owned core)."""


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be within 0..1, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MobileFacts:
    """Device state of a mobile node, from its latest heartbeat."""

    battery_percent: float
    charging: bool = False
    metered: bool = False
    relay_opt_in: bool = False
    """The user (and device policy) agreed to relay other nodes' traffic."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.battery_percent <= 100.0):
            raise ValueError(f"battery_percent must be within 0..100, got {self.battery_percent!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFacts:
    """One node as the planner sees it: identity, roles, placement, health facts, cost."""

    node_id: str
    roles: frozenset[Role]
    tenant: str
    region: str
    failure_domain: str
    """Where the node fails together with others: provider and site, e.g. ``aws/eu-west-1a``."""
    trust_tier: int = MAX_TRUST_TIER
    shared: bool = False
    """Provider-owned or explicitly shared infrastructure that may carry any tenant's traffic."""
    mobile: MobileFacts | None = None
    cpu_pressure: float = 0.0
    memory_pressure: float = 0.0
    queue_pressure: float = 0.0
    reliability: float = 1.0
    """Historical share of successful route use, 0..1."""
    operator_cost: float = 0.0
    """Relative cost of using this node, >= 0; operators express preference by lowering it."""
    draining: bool = False
    """The operator drains it (``control drain``): it carries no new route."""

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if not (0 <= self.trust_tier <= MAX_TRUST_TIER):
            raise ValueError(f"trust_tier must be within 0..{MAX_TRUST_TIER}")
        for name in ("cpu_pressure", "memory_pressure", "queue_pressure", "reliability"):
            _check_fraction(name, getattr(self, name))
        _check_non_negative("operator_cost", self.operator_cost)

    @property
    def is_mobile(self) -> bool:
        return self.mobile is not None or Role.MOBILE_EDGE in self.roles


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkObservation:
    """What ``src`` measured on its link to ``dst`` (directional: ``dst -> src`` is another one)."""

    src: str
    dst: str
    rtt_ms: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    """Packet loss, 0..1."""
    bandwidth_mbps: float = 100.0
    queue_depth: float = 0.0
    """Packets queued at ``src`` for this link."""
    retransmit_rate: float = 0.0
    """Share of sent packets retransmitted, 0..1."""
    observed_at: float | None = None
    """Seconds on the control plane's clock; ``None`` means "current"."""

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "jitter_ms", "bandwidth_mbps", "queue_depth"):
            _check_non_negative(name, getattr(self, name))
        _check_fraction("loss", self.loss)
        _check_fraction("retransmit_rate", self.retransmit_rate)


def _newest(a: LinkObservation, b: LinkObservation) -> LinkObservation:
    """The newer of two observations of one link; an exact tie keeps the larger field tuple."""
    ka = (a.observed_at if a.observed_at is not None else -math.inf, astuple(a))
    kb = (b.observed_at if b.observed_at is not None else -math.inf, astuple(b))
    return a if ka >= kb else b


@dataclass(frozen=True, slots=True)
class FabricGraph:
    """An immutable snapshot: nodes by id and the newest observation of each directed link."""

    nodes: Mapping[str, NodeFacts]
    links: Mapping[tuple[str, str], LinkObservation]
    dropped_links: int = 0
    """Observations left out: unknown endpoint, self-loop, or older than the age limit."""
    out_links: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        nodes: Iterable[NodeFacts],
        links: Iterable[LinkObservation],
        *,
        now: float | None = None,
        max_link_age_s: float = 300.0,
    ) -> FabricGraph:
        """Index ``nodes`` and ``links``; with ``now``, drop observations older than the limit.

        A duplicate node id is an error; duplicate link observations keep the newest.
        """
        by_id: dict[str, NodeFacts] = {}
        for node in nodes:
            if node.node_id in by_id:
                raise ValueError(f"duplicate node id {node.node_id!r}")
            by_id[node.node_id] = node
        kept: dict[tuple[str, str], LinkObservation] = {}
        dropped = 0
        for link in links:
            stale = (
                now is not None
                and link.observed_at is not None
                and now - link.observed_at > max_link_age_s
            )
            if link.src == link.dst or link.src not in by_id or link.dst not in by_id or stale:
                dropped += 1
                continue
            key = (link.src, link.dst)
            previous = kept.get(key)
            if previous is not None:
                dropped += 1
                link = _newest(previous, link)
            kept[key] = link
        out: dict[str, list[str]] = {}
        for src, dst in kept:
            out.setdefault(src, []).append(dst)
        out_links = {src: tuple(sorted(dsts)) for src, dsts in out.items()}
        return cls(by_id, kept, dropped, out_links)
