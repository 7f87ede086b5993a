"""``Session.urgent_pending``: what a carrier out of its turn's bulk budget still writes."""

from __future__ import annotations

from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass
from tests.session.pair import make_pair


def test_urgent_pending_is_control_acks_and_urgent_data_not_bulk() -> None:
    pair = make_pair(SessionConfig(pacing_target_delay=None))
    a = pair.a
    assert not a.urgent_pending()
    bulk = a.open_stream("web", TrafficClass.BULK)
    assert a.urgent_pending(), "the OPEN_STREAM is a control frame"
    a.data_to_send(now=0.0)
    a.send_data(bulk, bytes(1024))
    assert not a.urgent_pending(), "bulk alone is not urgent"
    term = a.open_stream("term", TrafficClass.INTERACTIVE)
    a.data_to_send(10, now=0.0)  # the OPEN_STREAM only: the budget is spent
    a.send_data(term, b"ping")
    assert a.urgent_pending()
    a.data_to_send(now=0.0)
    assert not a.urgent_pending()
