"""How a route is scored, factor by factor, and the reasons an operator reads.

A route's score is a cost in *milliseconds-equivalent*: lower is better, and
every factor is converted into the latency it is judged to be worth (1 % loss
is as bad as 20 ms more RTT, a node at full CPU as bad as 20 ms, ...).  The
score is the sum of per-link terms, per-node terms and two route terms; every
term is non-negative, so the search can use it as an edge cost.

The same functions price edges for the search and write the reasons, so the
reasons always add up to the score.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

from accessfabric.control.server.planning.model import MAX_TRUST_TIER, LinkObservation, NodeFacts

RTT = "rtt"
JITTER = "jitter"
LOSS = "loss"
BANDWIDTH = "bandwidth"
LINK_QUEUE = "link-queue"
RETRANSMITS = "retransmits"
NODE_PRESSURE = "node-pressure"
RELIABILITY = "reliability"
TRUST = "trust"
MOBILE_RELAY = "mobile-relay"
OPERATOR_COST = "operator-cost"
HOPS = "hops"
LOCALITY = "locality"
FAILURE_DOMAIN = "failure-domain"

FACTORS = (
    RTT,
    JITTER,
    LOSS,
    BANDWIDTH,
    LINK_QUEUE,
    RETRANSMITS,
    NODE_PRESSURE,
    RELIABILITY,
    TRUST,
    OPERATOR_COST,
    MOBILE_RELAY,
    HOPS,
    LOCALITY,
    FAILURE_DOMAIN,
)
"""Every factor name, in the order reasons are listed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringWeights:
    """What each factor is worth, in milliseconds-equivalent of added RTT.

    The defaults favour interactive traffic (RTT dominates; loss is expensive
    because it stalls a stream; bandwidth matters but saturates).  Every
    weight is >= 0; 0 switches a factor off.
    """

    rtt_per_ms: float = 1.0
    """Per millisecond of link RTT (the unit of the score)."""
    jitter_per_ms: float = 0.5
    """Per millisecond of link jitter."""
    loss_per_percent: float = 20.0
    """Per percentage point of link packet loss."""
    bandwidth_ms: float = 20.0
    """Per link: ``bandwidth_ms * ref / (bandwidth + ref)``; 20 at 0 Mbit/s, 10 at ``ref``."""
    bandwidth_reference_mbps: float = 50.0
    """The bandwidth at which a link pays half of ``bandwidth_ms``."""
    queue_per_packet: float = 0.1
    """Per packet queued at the sending side of a link."""
    retransmit_per_percent: float = 5.0
    """Per percentage point of retransmitted packets on a link."""
    cpu_pressure: float = 20.0
    """Per hop and replica, at CPU pressure 1.0 (linear)."""
    memory_pressure: float = 10.0
    """Per hop and replica, at memory pressure 1.0 (linear)."""
    queue_pressure: float = 20.0
    """Per hop and replica, at queue/socket pressure 1.0 (linear)."""
    unreliability: float = 100.0
    """Per hop and replica, times ``1 - reliability`` (reliability 0.99 costs 1 ms)."""
    trust_per_tier: float = 5.0
    """Per hop and replica, per trust tier below the top tier (3)."""
    mobile_relay: float = 15.0
    """Per mobile relay hop, for using someone's phone at all."""
    mobile_battery: float = 20.0
    """Per mobile relay hop not charging, times the share of battery already used."""
    mobile_metered: float = 50.0
    """Per mobile relay hop on a metered network (only when policy allows such hops)."""
    operator_cost: float = 10.0
    """Per unit of a node's ``operator_cost``, for hops and the replica."""
    per_hop: float = 2.0
    """Per relay hop: shorter routes have fewer things to fail."""
    other_region: float = 25.0
    """When the replica is in a different region from the source (service locality)."""
    shared_failure_domain: float = 50.0
    """Alternates only: per hop in a failure domain an earlier route already uses."""
    reused_node: float = 100.0
    """Alternates only: per hop an earlier route already uses."""
    pool_spread: float = 1.0
    """At most this much per replica of a pool (several service hosts or exits serving one
    service), by a rendezvous hash of (source, replica): replicas the other factors score
    within this of each other split their sources evenly and stably, the way session
    placement spreads devices over entries; a real difference still wins."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"weight {f.name} must be a finite number >= 0, got {value!r}")
        if self.bandwidth_reference_mbps <= 0.0:
            raise ValueError("bandwidth_reference_mbps must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    """One factor's share of a route's score, with what an operator needs to judge it."""

    factor: str
    contribution: float
    """Milliseconds-equivalent this factor added to the score."""
    explanation: str

    def __str__(self) -> str:
        return f"{self.factor:<15} {self.contribution:>+9.2f}  {self.explanation}"


# ---- per-link terms -------------------------------------------------------------------------


def bandwidth_term(bandwidth_mbps: float, w: ScoringWeights) -> float:
    ref = w.bandwidth_reference_mbps
    return w.bandwidth_ms * ref / (bandwidth_mbps + ref)


def link_terms(link: LinkObservation, w: ScoringWeights) -> tuple[float, ...]:
    """The link's terms in factor order: rtt, jitter, loss, bandwidth, link-queue, retransmits."""
    return (
        w.rtt_per_ms * link.rtt_ms,
        w.jitter_per_ms * link.jitter_ms,
        w.loss_per_percent * 100.0 * link.loss,
        bandwidth_term(link.bandwidth_mbps, w),
        w.queue_per_packet * link.queue_depth,
        w.retransmit_per_percent * 100.0 * link.retransmit_rate,
    )


def link_cost(link: LinkObservation, w: ScoringWeights) -> float:
    return sum(link_terms(link, w))


# ---- per-node terms -------------------------------------------------------------------------


def pressure_term(node: NodeFacts, w: ScoringWeights) -> float:
    return (
        w.cpu_pressure * node.cpu_pressure
        + w.memory_pressure * node.memory_pressure
        + w.queue_pressure * node.queue_pressure
    )


def node_terms(node: NodeFacts, w: ScoringWeights) -> tuple[float, ...]:
    """Terms every hop and the replica pay: node-pressure, reliability, trust, operator-cost."""
    return (
        pressure_term(node, w),
        w.unreliability * (1.0 - node.reliability),
        w.trust_per_tier * (MAX_TRUST_TIER - node.trust_tier),
        w.operator_cost * node.operator_cost,
    )


def mobile_term(node: NodeFacts, w: ScoringWeights) -> float:
    """What relaying through ``node`` costs for being a phone (0 for a fixed node)."""
    if not node.is_mobile:
        return 0.0
    term = w.mobile_relay
    mobile = node.mobile
    if mobile is not None:
        if not mobile.charging:
            term += w.mobile_battery * (1.0 - mobile.battery_percent / 100.0)
        if mobile.metered:
            term += w.mobile_metered
    return term


def relay_terms(node: NodeFacts, w: ScoringWeights) -> tuple[float, ...]:
    """Terms only a relay hop pays: mobile-relay, hops."""
    return (mobile_term(node, w), w.per_hop)


def hop_cost(node: NodeFacts, w: ScoringWeights) -> float:
    """What the search charges for passing through ``node``."""
    return sum(node_terms(node, w)) + sum(relay_terms(node, w))


def replica_cost(node: NodeFacts, w: ScoringWeights) -> float:
    """What the search charges for ending at ``node`` (locality aside)."""
    return sum(node_terms(node, w))


def locality_term(source: NodeFacts, replica: NodeFacts, w: ScoringWeights) -> float:
    return 0.0 if source.region == replica.region else w.other_region


def pool_spread_term(source: str, replica: str, w: ScoringWeights) -> float:
    """``source``'s own, stable preference among a pool's replicas (rendezvous hashing):
    in [0, ``w.pool_spread``)."""
    digest = hashlib.blake2b(f"{source}|{replica}".encode(), digest_size=8).digest()
    return w.pool_spread * int.from_bytes(digest, "big") / 2**64


# ---- reasons --------------------------------------------------------------------------------


def _fmt_hops(parts: Sequence[str], limit: int = 6) -> str:
    shown = list(parts[:limit])
    if len(parts) > limit:
        shown.append(f"+{len(parts) - limit} more")
    return ", ".join(shown)


def explain(
    path: Sequence[NodeFacts], links: Sequence[LinkObservation], w: ScoringWeights
) -> list[Reason]:
    """The reasons for a route ``path[0] -> ... -> path[-1]`` over ``links`` (one per hop).

    Factors that contribute nothing are left out, except RTT, which is always listed.
    """
    if len(links) != len(path) - 1 or len(path) < 2:
        raise ValueError("a route needs one link per hop and at least two nodes")
    source, relays, replica = path[0], path[1:-1], path[-1]
    per_link = [link_terms(link, w) for link in links]
    names = [f"{link.src}→{link.dst}" for link in links]
    reasons: list[Reason] = []

    def add(factor: str, terms: Sequence[float], explanation: str) -> None:
        total = math.fsum(terms)
        if total != 0.0 or factor == RTT:
            reasons.append(Reason(factor=factor, contribution=total, explanation=explanation))

    rtts = [f"{n} {link.rtt_ms:.1f}" for n, link in zip(names, links, strict=True)]
    add(
        RTT,
        [t[0] for t in per_link],
        f"RTT {math.fsum(x.rtt_ms for x in links):.1f} ms over {len(links)} link(s) "
        f"({_fmt_hops(rtts)}) x {w.rtt_per_ms:g}",
    )
    add(
        JITTER,
        [t[1] for t in per_link],
        f"jitter {math.fsum(x.jitter_ms for x in links):.1f} ms summed over the links "
        f"x {w.jitter_per_ms:g}",
    )
    worst_loss = max(range(len(links)), key=lambda i: links[i].loss)
    add(
        LOSS,
        [t[2] for t in per_link],
        f"loss {100 * math.fsum(x.loss for x in links):.2f} % summed (worst {names[worst_loss]} "
        f"{100 * links[worst_loss].loss:.2f} %) x {w.loss_per_percent:g} per %",
    )
    narrow = min(range(len(links)), key=lambda i: links[i].bandwidth_mbps)
    add(
        BANDWIDTH,
        [t[3] for t in per_link],
        f"bottleneck {links[narrow].bandwidth_mbps:.1f} Mbit/s on {names[narrow]}; each link "
        f"pays {w.bandwidth_ms:g} x {w.bandwidth_reference_mbps:g}/(Mbit/s + "
        f"{w.bandwidth_reference_mbps:g})",
    )
    add(
        LINK_QUEUE,
        [t[4] for t in per_link],
        f"{math.fsum(x.queue_depth for x in links):.0f} packet(s) queued on the links "
        f"x {w.queue_per_packet:g}",
    )
    add(
        RETRANSMITS,
        [t[5] for t in per_link],
        f"retransmits {100 * math.fsum(x.retransmit_rate for x in links):.2f} % summed "
        f"x {w.retransmit_per_percent:g} per %",
    )
    charged = [*relays, replica]
    per_node = [node_terms(n, w) for n in charged]
    add(
        NODE_PRESSURE,
        [t[0] for t in per_node],
        "cpu/memory/queue pressure "
        + _fmt_hops(
            [
                f"{n.node_id} {n.cpu_pressure:.2f}/{n.memory_pressure:.2f}/{n.queue_pressure:.2f}"
                for n in charged
            ]
        )
        + f" x {w.cpu_pressure:g}/{w.memory_pressure:g}/{w.queue_pressure:g}",
    )
    per_node_facts = (  # factor, the NodeFacts field (its words), its format, the weight
        (RELIABILITY, "reliability", ".3f", f"; (1 - reliability) x {w.unreliability:g}"),
        (TRUST, "trust_tier", "", f"; {w.trust_per_tier:g} per tier below {MAX_TRUST_TIER}"),
        (OPERATOR_COST, "operator_cost", "g", f" x {w.operator_cost:g}"),
    )
    for index, (factor, field, spec, weight) in enumerate(per_node_facts, start=1):
        facts = [f"{n.node_id} {format(getattr(n, field), spec)}" for n in charged]
        add(
            factor,
            [t[index] for t in per_node],
            f"{field.replace('_', ' ')} {_fmt_hops(facts)}{weight}",
        )
    per_relay = [relay_terms(n, w) for n in relays]
    mobiles = [n for n in relays if n.is_mobile]
    add(
        MOBILE_RELAY,
        [t[0] for t in per_relay],
        "relays through mobile "
        + _fmt_hops([_describe_mobile(n) for n in mobiles])
        + f" ({w.mobile_relay:g} each, + battery used x {w.mobile_battery:g} when not "
        f"charging, + {w.mobile_metered:g} if metered)",
    )
    add(
        HOPS,
        [t[1] for t in per_relay],
        f"{len(relays)} relay hop(s) x {w.per_hop:g}"
        + (f" ({', '.join(n.node_id for n in relays)})" if relays else ""),
    )
    add(
        LOCALITY,
        [locality_term(source, replica, w)],
        f"replica {replica.node_id} is in region {replica.region}, the source in {source.region}",
    )
    return reasons


def _describe_mobile(node: NodeFacts) -> str:
    m = node.mobile
    if m is None:
        return f"{node.node_id} (no device facts)"
    state = "charging" if m.charging else "on battery"
    metered = ", metered" if m.metered else ""
    return f"{node.node_id} ({m.battery_percent:.0f} %, {state}{metered})"
