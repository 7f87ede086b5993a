"""``bench vpn`` counts UDP where it arrived: the iperf3 server's figure, not the
client's packets sent less the gaps the server saw (ADR 0065)."""

from __future__ import annotations

import pytest

from accessfabric.bench.vpn import udp_arrived

# The ``end`` of ``iperf3 -c ... -u -b 5G -l 1372 -t 3 -J`` (iperf 3.12) through the VPN
# with offloads off, 2026-12-07 21:29 UTC: the server's socket took 47,026 datagrams
# (``nstat UdpInDatagrams``); 32,550 sent after the last one that arrived never did.
END = {
    "sum": {
        "seconds": 3.008018, "bytes": 488460812, "packets": 356021, "lost_packets": 276446,
        "sender": True,
    },
    "sum_sent": {
        "seconds": 3.004279, "bytes": 488460812, "packets": 356021, "lost_packets": 0,
        "sender": True,
    },
    "sum_received": {
        "seconds": 3.008018, "bytes": 64518300, "packets": 323471, "lost_packets": 276446,
        "sender": False,
    },
}  # fmt: skip


def test_udp_counted_at_the_server() -> None:
    packets, seconds = udp_arrived(END)
    assert packets == 47025 == END["sum_received"]["bytes"] // 1372
    assert seconds == 3.008018


def test_an_iperf3_without_the_servers_sum_is_refused_not_overstated() -> None:
    with pytest.raises(ValueError, match="no sum_received"):
        udp_arrived({"sum": END["sum"]})


_UDP_COLUMNS = (
    "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors "
    "IgnoredMulti MemErrors"
)
SNMP = (
    "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 1203\n"
    f"Udp: {_UDP_COLUMNS}\nUdp: 47026 0 8800 3 8792 0 8 0 0\n"
    f"UdpLite: {_UDP_COLUMNS}\nUdpLite: 0 0 0 0 5 0 0 0 0\n"
)  # /proc/net/snmp's layout (Linux 6.18); InErrors counts RcvbufErrors and InCsumErrors


def test_receive_buffer_drops_read_from_the_udp_rows() -> None:
    from accessfabric.bench.vpn import udp_receive_errors

    assert udp_receive_errors(SNMP) == 8792


def test_a_receivers_wait_for_a_cpu_summed_over_its_threads() -> None:
    from accessfabric.bench.runqueue import SchedShare, parse_schedstat, sched_share

    # /proc/<pid>/task/*/schedstat: ns on a CPU, ns runnable waiting for one, runs
    before = parse_schedstat(["1000000 2000000 10\n", "500 500 1\n"])
    assert before == (1000500, 2000500, 11)
    after = parse_schedstat(["151000000 1502000000 4010\n", "500 500 1\n"])
    share = sched_share(before, after, seconds=3.0)
    expected = SchedShare(ran=0.05, waited=0.5, wait_per_run_us=375.0)
    assert (share.ran, share.waited, share.wait_per_run_us) == pytest.approx(
        (expected.ran, expected.waited, expected.wait_per_run_us)
    )
    assert "waited 50% for a CPU (375 us before each" in share.describe()


def test_the_loss_note_says_how_long_the_receiver_waited() -> None:
    from accessfabric.bench.vpn import SchedShare, UdpLosses

    plain = UdpLosses(10, 2, 3_000)
    assert plain.describe().endswith("at the server's socket (receive buffer full)")
    waited = UdpLosses(10, 2, 3_000, SchedShare(ran=0.06, waited=0.3, wait_per_run_us=420))
    assert waited.describe().endswith(
        "the iperf3 server ran 6% of the run and waited 30% "
        "for a CPU (420 us before each of its runs on average)"
    )


def test_a_live_process_has_a_schedstat() -> None:
    import os

    from accessfabric.bench.runqueue import process_schedstat

    stat = process_schedstat(os.getpid())
    assert stat is not None and stat[0] > 0 and stat[2] > 0
    assert process_schedstat(2**22 + 1) is None  # above pid_max: no such process


def test_the_underlay_note_says_what_the_same_receiver_lost_without_the_vpn() -> None:
    from accessfabric.bench.vpn import SchedShare, UnderlayLosses

    assert UnderlayLosses(136_002).describe() == (
        "136,002 at the server's socket (receive buffer full)"
    )
    note = UnderlayLosses(136_002, SchedShare(ran=0.13, waited=0.26, wait_per_run_us=13)).describe()
    assert note.endswith(
        "the iperf3 server ran 13% of the run and waited 26% for a CPU "
        "(13 us before each of its runs on average)"
    )
