"""Endpoint candidates and health-aware ranking (pure: no sockets, no clock).

``candidates`` what a node can be dialed on; ``observations`` what dials and the control
plane report; ``policy`` the frozen knobs and measured defaults; ``health`` one
endpoint's bounded, decayed history; ``scoring`` the explainable score; ``ranker`` the
ranking and heartbeat report.  ``dialing`` walks a ranked list (asyncio, no sockets);
it is not imported here, so importing this package stays free of asyncio.
"""

from accessfabric.node.dialing.ranking.candidates import EndpointCandidate, Transport
from accessfabric.node.dialing.ranking.health import EndpointHealth, HealthEstimate
from accessfabric.node.dialing.ranking.observations import DialObservation, DialOutcome, RemoteHint
from accessfabric.node.dialing.ranking.policy import RankingPolicy, TransportWeights
from accessfabric.node.dialing.ranking.ranker import EndpointRanker
from accessfabric.node.dialing.ranking.scoring import RankedCandidate, ScoreReason

__all__ = [
    "DialObservation",
    "DialOutcome",
    "EndpointCandidate",
    "EndpointHealth",
    "EndpointRanker",
    "HealthEstimate",
    "RankedCandidate",
    "RankingPolicy",
    "RemoteHint",
    "ScoreReason",
    "Transport",
    "TransportWeights",
]
