"""Endpoint ranking: decay, backoff, capacity pressure, remote hints, bounds, ranked dialing."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accessfabric.node.dialing.ranking import (
    DialObservation,
    DialOutcome,
    EndpointCandidate,
    EndpointRanker,
    RankedCandidate,
    RankingPolicy,
    RemoteHint,
    Transport,
)
from accessfabric.node.dialing.ranking.dialing import (
    AllCandidatesFailed,
    CapacityLimitedError,
    DialCounters,
    dial_ranked,
)
from accessfabric.wire.registry import TrafficClass

LOG = logging.getLogger("test.ranking")
QUIC = EndpointCandidate(transport=Transport.DIRECT_QUIC, address="10.0.0.1:4433", fingerprint="ab")
TCP = EndpointCandidate(transport=Transport.TCP_TLS, address="10.0.0.1:7443", node_id="n1")
WS = EndpointCandidate(transport=Transport.WEBSOCKET, address="wss://10.0.0.1:8443/fabric")
HTTPS = EndpointCandidate(transport=Transport.HTTPS_FALLBACK, address="https://fallback/fabric")
ALL = [HTTPS, WS, QUIC, TCP]


def ok(candidate: EndpointCandidate, at: float, latency: float = 0.02) -> DialObservation:
    return DialObservation(candidate=candidate, outcome=DialOutcome.SUCCESS, at=at, latency=latency)


def fail(candidate: EndpointCandidate, at: float, reason: str = "refused") -> DialObservation:
    return DialObservation(candidate=candidate, outcome=DialOutcome.FAILURE, at=at, reason=reason)


def full(candidate: EndpointCandidate, at: float) -> DialObservation:
    return DialObservation(
        candidate=candidate, outcome=DialOutcome.CAPACITY_LIMITED, at=at, reason="stream limit"
    )


def order(ranked: list[RankedCandidate]) -> list[Transport]:
    return [r.candidate.transport for r in ranked]


def score(ranker: EndpointRanker, candidate: EndpointCandidate, now: float) -> float:
    return ranker.rank([candidate], now)[0].score


def factor(ranked: RankedCandidate, name: str) -> float:
    return sum(r.contribution for r in ranked.reasons if r.factor == name)


# ----------------------------------------------------------------------------- defaults


def test_default_policy_prefers_tcp_tls_over_quic_for_bulk_and_fallback_last() -> None:
    ranker = EndpointRanker()
    for traffic_class in (None, TrafficClass.BULK, TrafficClass.RELIABLE):
        ranked = ranker.rank(ALL, now=0.0, traffic_class=traffic_class)
        assert order(ranked) == [
            Transport.TCP_TLS,
            Transport.WEBSOCKET,
            Transport.DIRECT_QUIC,
            Transport.HTTPS_FALLBACK,
        ]
    interactive = order(ranker.rank(ALL, now=0.0, traffic_class=TrafficClass.INTERACTIVE))
    assert interactive[-1] is Transport.HTTPS_FALLBACK


def test_reasons_sum_to_the_score_and_explain_each_factor() -> None:
    ranker = EndpointRanker()
    ranker.record(fail(QUIC, 0.0, reason="TimeoutError"))
    ranker.record(full(TCP, 0.0))
    ranker.add_remote_hint(
        RemoteHint(candidate=WS, success_rate=0.5, latency=0.2, observed_at=0.0, reporter="n9")
    )
    for ranked in ranker.rank(ALL, now=1.0):
        assert math.isclose(ranked.score, sum(r.contribution for r in ranked.reasons))
        assert ranked.reasons[0].factor == "transport"
        assert all(r.explanation for r in ranked.reasons)
        json.dumps(ranked.to_dict())
    quic = next(r for r in ranker.rank(ALL, now=1.0) if r.candidate == QUIC)
    assert {"reliability", "latency", "backoff"} <= {r.factor for r in quic.reasons}
    assert "TimeoutError" in str(next(r for r in quic.reasons if r.factor == "backoff"))


def test_measured_health_overrides_the_transport_label() -> None:
    """Two fresh TCP+TLS failures put healthy QUIC first even once the backoff ended."""
    ranker = EndpointRanker()
    ranker.record(fail(TCP, 0.0))
    ranker.record(fail(TCP, 1.0))
    ranker.record(ok(QUIC, 1.0))
    backoff_over = 1.0 + ranker.policy.backoff_for(2) + 0.1
    assert order(ranker.rank([TCP, QUIC], backoff_over))[0] is Transport.DIRECT_QUIC


# ----------------------------------------------------------------------------- decay


def test_an_old_failure_matters_less_than_a_new_one() -> None:
    old, new = EndpointRanker(), EndpointRanker()
    old.record(fail(TCP, 0.0))
    new.record(fail(TCP, 590.0))
    now = 600.0  # both out of backoff
    assert score(old, TCP, now) > score(new, TCP, now)


def test_half_life_is_respected() -> None:
    policy = RankingPolicy(half_life=100.0)
    ranker = EndpointRanker(policy)
    ranker.record(fail(TCP, 0.0))
    health = ranker.health(TCP)
    assert health is not None
    assert math.isclose(health.estimate(0.0, policy).failures, 1.0)
    assert math.isclose(health.estimate(100.0, policy).failures, 0.5)
    assert math.isclose(health.estimate(300.0, policy).failures, 0.125)
    clean = score(EndpointRanker(policy), TCP, 0.0)
    penalties = [clean - score(ranker, TCP, t) for t in (100.0, 200.0, 400.0, 800.0)]
    assert penalties == sorted(penalties, reverse=True)
    assert penalties[-1] < 0.2 * penalties[0]


# ----------------------------------------------------------------------------- failures


def test_failed_dial_without_latency_never_outranks_a_slow_success() -> None:
    ranker = EndpointRanker()
    slow = replace(TCP, address="10.0.0.2:7443")
    ranker.record(fail(TCP, 0.0))
    ranker.record(ok(slow, 0.0, latency=4.9))
    # fresh, in and out of backoff, and ten half-lives later (nearly decayed, not pruned)
    for now in (0.0, 1.0, 100.0, 3_000.0):
        ranked = ranker.rank([TCP, slow], now)
        assert ranked[0].candidate == slow, now
        failed = next(r for r in ranked if r.candidate == TCP)
        worked = next(r for r in ranked if r.candidate == slow)
        assert factor(failed, "latency") <= factor(worked, "latency")


def test_failure_latency_counts_as_the_worst_latency() -> None:
    """Even a failure that reports 1 ms is scored at the ceiling: time-to-fail is not speed."""
    ranker = EndpointRanker()
    quick_fail = DialObservation(
        candidate=TCP, outcome=DialOutcome.FAILURE, at=0.0, latency=0.001, reason="reset"
    )
    ranker.record(quick_fail)
    ranker.record(ok(WS, 0.0, latency=0.001))
    health = ranker.health(TCP)
    assert health is not None
    assert health.estimate(0.0, ranker.policy).latency == ranker.policy.latency_ceiling
    ranked = {r.candidate: r for r in ranker.rank([TCP, WS], 0.0)}
    assert factor(ranked[TCP], "latency") < factor(ranked[WS], "latency") == 0.0
    no_latency = EndpointRanker()
    no_latency.record(
        DialObservation(candidate=WS, outcome=DialOutcome.SUCCESS, at=0.0, latency=None)
    )
    assert factor(no_latency.rank([WS], 0.0)[0], "latency") == factor(ranked[TCP], "latency")


def test_demoted_candidate_is_kept_and_recovers_after_backoff() -> None:
    ranker = EndpointRanker()
    ranker.record(fail(TCP, 0.0))
    during = ranker.rank([TCP, QUIC, WS], 1.0)
    assert order(during) == [Transport.WEBSOCKET, Transport.DIRECT_QUIC, Transport.TCP_TLS]
    assert during[-1].in_backoff and during[-1].backoff_remaining == pytest.approx(4.0)
    after = ranker.rank([TCP, QUIC, WS], ranker.policy.backoff_base + 0.1)
    assert order(after)[0] is Transport.TCP_TLS
    assert not after[0].in_backoff


def test_backoff_grows_exponentially_with_a_cap_and_success_clears_it() -> None:
    policy = RankingPolicy()
    ranker = EndpointRanker(policy)
    for i in range(12):
        ranker.record(fail(TCP, float(i)))
    health = ranker.health(TCP)
    assert health is not None
    assert health.backoff_remaining(11.0) == pytest.approx(policy.backoff_max)
    assert [policy.backoff_for(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    ranker.record(ok(TCP, 12.0))
    assert not health.in_backoff(12.0) and health.consecutive_failures == 0


# ----------------------------------------------------------------------------- capacity


def test_capacity_penalty_is_bounded_and_softer_than_a_failure() -> None:
    policy = RankingPolicy()
    pressured, failed = EndpointRanker(policy), EndpointRanker(policy)
    for i in range(200):
        pressured.record(full(TCP, i * 0.01))
    failed.record(fail(TCP, 0.0))
    clean = score(EndpointRanker(policy), TCP, 2.0)
    penalty = clean - score(pressured, TCP, 2.0)
    assert 0 < penalty <= policy.capacity_penalty_max
    health = pressured.health(TCP)
    assert health is not None and not health.in_backoff(2.0)
    for now in (2.0, 60.0):  # in backoff, and long after
        assert score(pressured, TCP, now) > score(failed, TCP, now)


def test_capacity_pressure_spreads_load_but_keeps_the_transport_order() -> None:
    ranker = EndpointRanker()
    ranker.record(full(TCP, 0.0))
    ranker.record(full(TCP, 0.5))
    assert order(ranker.rank([TCP, QUIC, WS], 1.0))[0] is Transport.TCP_TLS
    other = replace(TCP, address="10.0.0.3:7443")
    assert ranker.rank([TCP, other], 1.0)[0].candidate == other


def test_policy_rejects_a_capacity_penalty_harsher_than_a_failure() -> None:
    with pytest.raises(ValueError, match="capacity_penalty_max"):
        RankingPolicy(capacity_penalty_max=50.0)
    with pytest.raises(ValueError, match="backoff_penalty"):
        RankingPolicy(backoff_penalty=10.0)


# ----------------------------------------------------------------------------- fallback


def test_https_fallback_is_last_unless_everything_else_is_failing() -> None:
    ranker = EndpointRanker()
    for candidate in (TCP, QUIC):
        ranker.record(fail(candidate, 0.0))
    # one good candidate left: fallback still last, behind the demoted ones too
    ranked = ranker.rank(ALL, 1.0)
    assert order(ranked)[0] is Transport.WEBSOCKET
    assert order(ranked)[-1] is Transport.HTTPS_FALLBACK
    ranker.record(fail(WS, 0.5))
    ranked = ranker.rank(ALL, 1.0)
    assert order(ranked)[0] is Transport.HTTPS_FALLBACK
    assert {r.candidate for r in ranked} == set(ALL)
    assert ranked[0].reasons[-1].factor == "emergency"


def test_https_fallback_stays_last_even_with_perfect_health() -> None:
    ranker = EndpointRanker()
    for i in range(30):
        ranker.record(ok(HTTPS, float(i), latency=0.001))
        ranker.record(full(TCP, float(i)))
    ranker.record(fail(QUIC, 29.0))
    assert order(ranker.rank(ALL, 30.0))[-1] is Transport.HTTPS_FALLBACK


# ----------------------------------------------------------------------------- remote hints


def hint(candidate: EndpointCandidate, rate: float, at: float, reporter: str = "n2") -> RemoteHint:
    return RemoteHint(
        candidate=candidate, success_rate=rate, latency=0.03, observed_at=at, reporter=reporter
    )


def test_fresh_local_observation_outweighs_an_old_remote_hint() -> None:
    ranker = EndpointRanker()
    ranker.add_remote_hint(hint(TCP, 0.0, at=0.0))
    ranker.record(ok(TCP, 1_000.0))
    health = ranker.health(TCP)
    assert health is not None
    estimate = health.estimate(1_000.0, ranker.policy)
    assert estimate.local_weight > 4 * estimate.remote_weight
    assert estimate.successes > 4 * estimate.failures


def test_fresh_remote_hint_outweighs_an_old_local_observation() -> None:
    ranker = EndpointRanker()
    ranker.record(ok(TCP, 0.0))
    ranker.add_remote_hint(hint(TCP, 0.0, at=1_000.0))
    health = ranker.health(TCP)
    assert health is not None
    estimate = health.estimate(1_000.0, ranker.policy)
    assert estimate.failures > estimate.successes


def test_remote_hints_move_the_ranking_and_newest_per_reporter_wins() -> None:
    ranker = EndpointRanker()
    reporters = ("a", "b", "c", "d", "e")
    for reporter in reporters:
        ranker.add_remote_hint(hint(TCP, 0.0, at=10.0, reporter=reporter))
    assert order(ranker.rank([TCP, QUIC], 10.0))[0] is Transport.DIRECT_QUIC
    for reporter in reporters:
        ranker.add_remote_hint(hint(TCP, 1.0, at=20.0, reporter=reporter))
        ranker.add_remote_hint(hint(TCP, 0.0, at=5.0, reporter=reporter))  # older: ignored
    health = ranker.health(TCP)
    assert health is not None and len(health.hints) == 5
    assert order(ranker.rank([TCP, QUIC], 20.0))[0] is Transport.TCP_TLS
    ranked = ranker.rank([TCP], 20.0)[0]
    assert any(r.factor == "remote hints" for r in ranked.reasons)


def test_remote_hints_never_start_a_backoff() -> None:
    ranker = EndpointRanker()
    ranker.add_remote_hint(hint(TCP, 0.0, at=0.0))
    assert not ranker.rank([TCP], 0.0)[0].in_backoff


# ----------------------------------------------------------------------------- bounds


def test_pruning_by_age_and_count() -> None:
    policy = RankingPolicy(max_observations_per_candidate=8, max_observation_age=100.0)
    ranker = EndpointRanker(policy)
    for i in range(50):
        ranker.record(ok(TCP, float(i)))
    health = ranker.health(TCP)
    assert health is not None
    assert [o.at for o in health.observations] == [float(i) for i in range(42, 50)]
    ranker.prune(145.0)
    assert [o.at for o in health.observations] == [45.0, 46.0, 47.0, 48.0, 49.0]
    ranker.prune(1_000.0)
    assert ranker.health(TCP) is None and len(ranker) == 0


def test_reasons_are_truncated_when_stored() -> None:
    ranker = EndpointRanker()
    ranker.record(fail(TCP, 0.0, reason="x" * 10_000))
    health = ranker.health(TCP)
    assert health is not None
    assert len(health.observations[0].reason) == ranker.policy.max_reason_length


candidates_st = st.builds(
    EndpointCandidate,
    transport=st.sampled_from(list(Transport)),
    address=st.integers(0, 400).map(lambda i: f"10.0.{i // 250}.{i % 250}:443"),
)
events_st = st.lists(
    st.tuples(
        candidates_st,
        st.sampled_from(["success", "failure", "capacity_limited", "hint"]),
        st.floats(0, 10_000, allow_nan=False),
        st.integers(0, 20),
    ),
    max_size=600,
)


@settings(max_examples=40, deadline=None)
@given(events=events_st)
def test_memory_stays_bounded_under_a_flood(
    events: list[tuple[EndpointCandidate, str, float, int]],
) -> None:
    policy = RankingPolicy(
        max_tracked_candidates=16, max_observations_per_candidate=4, max_hints_per_candidate=3
    )
    ranker = EndpointRanker(policy)
    for candidate, kind, at, reporter in events:
        if kind == "hint":
            ranker.add_remote_hint(hint(candidate, 0.5, at, reporter=f"r{reporter}"))
        else:
            outcome = DialOutcome(kind)
            latency = 0.01 if outcome is DialOutcome.SUCCESS else None
            ranker.record(
                DialObservation(candidate=candidate, outcome=outcome, at=at, latency=latency)
            )
        assert len(ranker) <= 16
    for candidate, _, _, _ in events[:50]:
        health = ranker.health(candidate)
        if health is not None:
            assert len(health.observations) <= 4 and len(health.hints) <= 3
    ranked = ranker.rank([e[0] for e in events], 10_000.0)
    assert len(ranked) == len({e[0].key for e in events})
    for entry in ranked:
        assert math.isfinite(entry.score)
    report = ranker.health_report(10_000.0, limit=100)
    assert len(report) <= min(16, policy.max_report_entries)


def test_health_report_is_bounded_and_json_able() -> None:
    ranker = EndpointRanker()
    for i in range(300):
        candidate = EndpointCandidate(
            transport=Transport.TCP_TLS, address=f"h{i}.example:443" + "p" * 400
        )
        ranker.record(fail(candidate, float(i), reason="r" * 500))
        ranker.record(ok(candidate, float(i) + 0.5))
    report = ranker.health_report(400.0, limit=1_000)
    assert len(report) == ranker.policy.max_report_entries
    assert len(ranker.health_report(400.0, limit=5)) == 5
    encoded = json.dumps(report)
    assert len(encoded) < 64 * 1024
    newest = report[0]
    assert str(newest["address"]).startswith("h299.")
    assert newest["success_rate"] == pytest.approx(0.5, abs=0.01)
    assert newest["consecutive_failures"] == 0


def test_health_report_leaves_remote_hints_out() -> None:
    ranker = EndpointRanker()
    ranker.add_remote_hint(hint(TCP, 1.0, at=0.0))
    assert ranker.health_report(1.0, limit=10) == []


# ----------------------------------------------------------------------------- dialing


class FakeDialer:
    def __init__(self, outcomes: dict[Transport, Exception | str]) -> None:
        self.outcomes = outcomes
        self.dialed: list[Transport] = []

    async def __call__(self, candidate: EndpointCandidate) -> str:
        self.dialed.append(candidate.transport)
        await asyncio.sleep(0)
        outcome = self.outcomes[candidate.transport]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_dial_ranked_chooses_the_first_success_and_records_every_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ranker = EndpointRanker()
    counters = DialCounters()
    dialer = FakeDialer(
        {
            Transport.TCP_TLS: ConnectionRefusedError("refused"),
            Transport.WEBSOCKET: CapacityLimitedError("stream limit"),
            Transport.DIRECT_QUIC: "quic-session",
            Transport.HTTPS_FALLBACK: "https-session",
        }
    )
    clock = iter(float(i) for i in range(100))
    ranked = ranker.rank(ALL, 0.0)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        result, attempts = asyncio.run(
            dial_ranked(
                ranked, dialer, log=LOG, ranker=ranker, counters=counters, clock=lambda: next(clock)
            )
        )
    assert result == "quic-session"
    assert dialer.dialed == [Transport.TCP_TLS, Transport.WEBSOCKET, Transport.DIRECT_QUIC]
    assert [a.outcome for a in attempts] == [
        DialOutcome.FAILURE,
        DialOutcome.CAPACITY_LIMITED,
        DialOutcome.SUCCESS,
    ]
    assert counters.attempts == 3 and counters.successes == 1 and counters.capacity_limited == 1
    assert counters.failures_by_kind == {"ConnectionRefusedError": 1, "CapacityLimitedError": 1}
    assert counters.selected_by_transport == {"direct_quic": 1}
    assert counters.pinned_selections == 1
    assert "CapacityLimitedError" in counters.last_failure_reason
    selected = [r.getMessage() for r in caplog.records if "selected" in r.getMessage()]
    assert selected and "transport=direct_quic" in selected[0]
    assert "pinned=True" in selected[0] and "fallbacks_left=1" in selected[0]
    tcp_health, ws_health = ranker.health(TCP), ranker.health(WS)
    assert tcp_health is not None and tcp_health.in_backoff(2.0)
    assert ws_health is not None and not ws_health.in_backoff(2.0)
    quic_health = ranker.health(QUIC)
    assert quic_health is not None and quic_health.observations[-1].latency == 1.0


def test_dial_ranked_walks_all_candidates_and_reports_every_reason() -> None:
    ranker = EndpointRanker()
    counters = DialCounters()
    dialer = FakeDialer(
        {
            Transport.TCP_TLS: ConnectionRefusedError("refused"),
            Transport.WEBSOCKET: OSError("network unreachable"),
            Transport.DIRECT_QUIC: TimeoutError(),
            Transport.HTTPS_FALLBACK: PermissionError("proxy said 403"),
        }
    )
    ranked = ranker.rank(ALL, 0.0)
    with pytest.raises(AllCandidatesFailed) as raised:
        asyncio.run(dial_ranked(ranked, dialer, log=LOG, ranker=ranker, counters=counters))
    assert dialer.dialed == order(ranked)
    reasons = [a.reason for a in raised.value.attempts]
    assert reasons == [
        "ConnectionRefusedError: refused",
        "OSError: network unreachable",
        "TimeoutError",
        "PermissionError: proxy said 403",
    ]
    for reason in reasons:
        assert reason in str(raised.value)
    assert counters.exhausted == 1 and counters.attempts == 4 and counters.successes == 0
    assert sum(counters.failures_by_kind.values()) == 4


def test_dial_ranked_with_no_candidates_fails_cleanly() -> None:
    dialer = FakeDialer({})
    with pytest.raises(AllCandidatesFailed, match="no endpoint candidates"):
        asyncio.run(dial_ranked([], dialer, log=LOG))


def test_dial_ranked_lets_cancellation_through() -> None:
    async def hang(candidate: EndpointCandidate) -> str:
        await asyncio.sleep(3600)
        return "never"

    async def main() -> None:
        ranker = EndpointRanker()
        task = asyncio.ensure_future(dial_ranked(ranker.rank(ALL, 0.0), hang, log=LOG))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(ranker) == 0

    asyncio.run(main())


def test_failure_kinds_are_bounded() -> None:
    counters = DialCounters()
    for i in range(100):
        counters.count_failure(f"Kind{i}", "why")
    assert len(counters.failures_by_kind) <= 33
    assert counters.failures_by_kind["other"] == 100 - 32


# ----------------------------------------------------------------------------- purity


def test_ranking_core_uses_no_io_and_no_clock() -> None:
    package = Path(__file__).resolve().parents[2] / "src/accessfabric/node/ranking"
    for path in package.glob("*.py"):
        if path.name == "dialing.py":
            continue
        text = path.read_text()
        for module in ("asyncio", "socket", "time", "random"):
            assert f"import {module}" not in text, (path.name, module)
