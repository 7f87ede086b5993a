"""``bench vpn`` counts UDP where it arrived: the iperf3 server's figure, not the
client's packets sent less the gaps the server saw (ADR 0065)."""

from __future__ import annotations

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


def test_older_iperf3_without_the_servers_sum_falls_back_to_the_clients() -> None:
    assert udp_arrived({"sum": END["sum"]}) == (356021 - 276446, 3.008018)
