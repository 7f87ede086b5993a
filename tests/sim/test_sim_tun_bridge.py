"""TunBridge forwarding with delay, exercised over SOCK_SEQPACKET pairs (no root needed)."""

from __future__ import annotations

import socket
import time

from accessfabric.sim import DelayLine, TunBridge


def test_bridge_delays_both_directions() -> None:
    a_user, a_bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b_user, b_bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socks = (a_user, a_bridge, b_user, b_bridge)
    for sock in (a_bridge, b_bridge):
        sock.setblocking(False)
    for sock in (a_user, b_user):
        sock.settimeout(2.0)
    bridge = TunBridge(
        a_bridge.fileno(),
        b_bridge.fileno(),
        DelayLine(0.030),
        DelayLine(0.010),
        close_fds=False,
    )
    try:
        with bridge:
            start = time.monotonic()
            a_user.send(b"ping-1")
            a_user.send(b"ping-2")
            assert b_user.recv(100) == b"ping-1"
            assert b_user.recv(100) == b"ping-2"
            one_way = time.monotonic() - start
            b_user.send(b"pong")
            assert a_user.recv(100) == b"pong"
            round_trip = time.monotonic() - start
        assert 0.030 <= one_way < 0.060
        assert 0.040 <= round_trip < 0.090
        assert bridge.a_to_b.stats.delivered == 2 and bridge.b_to_a.stats.delivered == 1
    finally:
        for sock in socks:
            sock.close()
