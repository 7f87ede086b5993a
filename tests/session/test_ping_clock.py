"""A PING sent after the session sat idle measures the round trip, not the idle time."""

from __future__ import annotations

from accessfabric.session import events as ev
from tests.session.pair import make_pair


def test_ping_after_idle_measures_only_the_round_trip() -> None:
    pair = make_pair()
    pair.now = 5.0  # five idle seconds: nothing sent or received since the handshake
    opaque = pair.a.ping(now=5.0)
    to_b = pair.a.data_to_send(now=5.0)
    pair.now = 5.01
    pair.b.receive_data(to_b, pair.now)
    events = pair.a.receive_data(pair.b.data_to_send(now=pair.now), pair.now)
    acks = [e for e in events if isinstance(e, ev.PingAcknowledged) and e.opaque == opaque]
    assert len(acks) == 1
    assert abs(acks[0].rtt - 0.01) < 1e-9
