"""Stream groups (issue 17, ADR 0051): a group's streams share one send turn of their class.

The failure mode they fix: a relay's tenant gate holds tenant A's bytes while tenant B's
flow, and ACKs are end to end, so on the session that carries both tenants to the relay
A's held bytes stay in flight.  Whatever the sender can send next (an ACK, a credit, its
pacer's window frees room) went round the ready streams one by one: ten turns to A's ten
streams for one to B's, so B reached the relay at a trickle, the gate took B for idle and
let A through (measured: B at 8-30 % of the relay on a loaded machine).  Grouped by
tenant, B gets half of every such opening."""

from __future__ import annotations

from accessfabric.session import SessionConfig
from accessfabric.session.scheduler import ClassScheduler
from accessfabric.wire import TrafficClass
from tests.session.pair import make_pair

CONFIG = SessionConfig(
    pacing_target_delay=None,
    initial_stream_window=16 << 20,
    initial_session_window=64 << 20,
    max_stream_send_buffer=16 << 20,
)


def _shares(groups: bool) -> dict[str, list[int]]:
    """Bytes each stream of tenant a (10 bulk streams) and b (1) sends while all have
    plenty queued, taken out 64 KiB at a time (what a busy carrier lets out)."""
    pair = make_pair(CONFIG, CONFIG)
    streams = {"a": [pair.a.open_stream("bulk", TrafficClass.BULK) for _ in range(10)]}
    streams["b"] = [pair.a.open_stream("bulk", TrafficClass.BULK)]
    pair.pump()
    chunk = b"x" * (1 << 20)
    for tenant, ids in streams.items():
        for stream_id in ids:
            if groups:
                pair.a.set_stream_group(stream_id, tenant)
            for _ in range(8):
                pair.a.send_data(stream_id, chunk)
    before = {s: pair.a.stream_metrics(s).bytes_out for ids in streams.values() for s in ids}
    for _ in range(200):  # 12.5 MiB of the 88 queued
        assert pair.a.data_to_send(64 * 1024, now=pair.now)
    return {
        tenant: [pair.a.stream_metrics(s).bytes_out - before[s] for s in ids]
        for tenant, ids in streams.items()
    }


def test_a_tenant_with_ten_streams_gets_the_share_of_another_tenants_one() -> None:
    sent = _shares(groups=True)
    total = sum(sent["a"]) + sum(sent["b"])
    assert 0.45 <= sum(sent["b"]) / total <= 0.55, sent
    assert min(sent["a"]) > 0.7 * max(sent["a"]), sent  # a's turn goes round its streams


def test_streams_of_no_group_each_get_a_turn_as_before() -> None:
    sent = _shares(groups=False)
    total = sum(sent["a"]) + sum(sent["b"])
    assert sum(sent["b"]) / total < 0.15, sent  # one stream in eleven: what starved b


def test_a_ready_stream_moves_into_its_group_and_leaves_it() -> None:
    scheduler = ClassScheduler(quantum=1000)
    bulk, control = TrafficClass.BULK, TrafficClass.CONTROL
    for stream_id in (1, 2, 3):
        scheduler.mark_ready(stream_id, bulk)
    scheduler.set_group(1, bulk, "a")  # already ready: it moves into the group's entry
    scheduler.set_group(2, bulk, "a")
    assert sorted(scheduler.ready_ids((bulk,))) == [1, 2, 3]
    picks = []
    for _ in range(4):
        pick = scheduler.next_shared()
        assert pick is not None
        picks.append(pick[0])
        scheduler.charge(pick[0], bulk, 2000, ready=True)
    assert picks.count(3) == 2, picks  # group a (1 and 2 by turns) and 3 alternate
    assert set(picks) == {1, 2, 3}
    scheduler.discard(1, bulk)
    scheduler.discard(2, bulk)
    assert scheduler.ready_ids((bulk,)) == [3]
    scheduler.forget(1, bulk)
    scheduler.mark_ready(1, bulk)  # forgotten: a stream of its own again
    assert sorted(scheduler.ready_ids((bulk,))) == [1, 3]
    scheduler.set_group(6, bulk, "b")
    scheduler.mark_ready(6, bulk)
    scheduler.forget(6, bulk)  # forgotten while ready: gone from its group's turn too
    assert sorted(scheduler.ready_ids((bulk,))) == [1, 3]
    # urgent classes: one frame per turn while another stream of the class waits, also
    # when both are in one group
    scheduler.set_group(4, control, "a")
    scheduler.set_group(5, control, "a")
    scheduler.mark_ready(4, control)
    assert scheduler.allowance(control) > 1
    scheduler.mark_ready(5, control)
    assert scheduler.next_urgent() == (4, control)
    assert scheduler.allowance(control) == 1
