"""``bench fleet``'s baseline and report: plain TLS connections to a server process,
measured for real (a small count), and every fleet figure beside its baseline."""

from __future__ import annotations

from accessfabric.bench import SUITES
from accessfabric.bench.fleet import plain_tls_baseline, rehome_baseline, report


def test_the_plain_tls_baseline_measures_its_connections_and_the_report_pairs_figures() -> None:
    assert SUITES["fleet"] == "accessfabric.bench.fleet"
    base = plain_tls_baseline(20, hold=1.2, interval=0.5)  # a ping per connection at least
    assert base["connect_s"] > 0 and base["pings"] >= 20
    assert 0 < base["ping_p99_ms"] < 5000
    assert base["rss_per_connection_kib"] > 0
    assert rehome_baseline(5) > 0  # the same server process, five connections timed
    summary = {
        "connected_heartbeating_s": 7.0,
        "entry_cpu_hold_percent": {"entry-1": 1.5, "entry-2": 2.5},
        "entry_rss_growth_per_session_kib": {"entry-1": 70.0, "entry-2": 80.0},
        "heartbeat_p99_ms": 177.0,
        "lease_p99_ms": 300.0,
        "kill": {"devices_on_it": 12, "back_s": 6.0, "lost": 0},
    }
    out = report(20, summary, base, 0.2)
    values = {r.metric: (r.value, r.baseline_value) for r in out.results}
    assert values["entry CPU, hold (busier entry)"] == (2.5, base["cpu_percent"])
    assert values["entry RSS per session"] == (80.0, base["rss_per_connection_kib"])
    assert values["heartbeat p99"] == (177.0, base["ping_p99_ms"])
    assert values["re-home 12 devices after SIGKILL"] == (6.0, 0.2)
    assert '"suite": "fleet"' in out.to_json()


def test_the_suite_runs_sim_fleet_with_all_its_options() -> None:
    from accessfabric.bench.fleet import fleet_args

    args = fleet_args(1000)  # every option sim fleet reads (drain_entry was missing)
    assert args.control_cpu is None and fleet_args(10, control_cpu=1).control_cpu == 1
    assert (args.devices, args.entries, args.kill_entry, args.drain_entry) == (1000, 2, True, False)
    assert args.heartbeat == 10.0 and args.quiet and args.work is None
