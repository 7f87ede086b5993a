"""What the NAT reflector answers (node/dialing/reflector_limits.py): no amplification, per-source
fairness, a bounded table; and the real reflector on loopback UDP ignoring unpadded requests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from accessfabric.node.dialing.nat_probe import NatReflector, start_reflector
from accessfabric.node.dialing.reflector_limits import (
    GLOBAL_LIMITED,
    GLOBAL_RATE,
    MAX_SOURCES,
    REDIRECT_LIMITED,
    REDIRECT_RATE,
    SOURCE_BURST,
    SOURCE_LIMITED,
    SOURCE_RATE,
    TOO_SMALL,
    ReflectorLimits,
    source_key,
)
from accessfabric.wire.stun import (
    LARGEST_SUCCESS,
    PADDED_SIZE,
    BindingRequest,
    BindingSuccess,
    decode,
    encode_request,
    encode_success,
)
from tests.conditions import until

TID = bytes(range(12))
PLAIN = BindingRequest(TID)
REDIRECTED = BindingRequest(TID, response_port=4000)


def test_no_answer_is_larger_than_an_answered_request() -> None:
    """The largest answer (IPv6) fits in the smallest request the reflector answers, and
    every request the probe sends is padded to exactly that size."""
    answers = [encode_success(BindingSuccess(TID, mapped))
               for mapped in (("255.255.255.255", 65535), ("ffff::ffff", 65535))]  # fmt: skip
    assert [len(a) for a in answers] == [32, LARGEST_SUCCESS]
    assert LARGEST_SUCCESS <= PADDED_SIZE
    limits = ReflectorLimits()
    for change_port in (False, True):
        for response_port in (None, 1):
            request = BindingRequest(TID, change_port, response_port)
            padded = encode_request(request, size=PADDED_SIZE)
            assert len(padded) == PADDED_SIZE
            assert decode(padded) == request
            assert limits.admit(len(padded), request, "192.0.2.1", 0.0) is None
            unpadded = encode_request(request)
            assert len(unpadded) < LARGEST_SUCCESS
            assert limits.admit(len(unpadded), request, "192.0.2.1", 0.0) == TOO_SMALL
    assert limits.dropped[TOO_SMALL] == 4 and limits.answered == 4


def test_an_unpadded_flood_costs_no_tokens() -> None:
    """Ignored requests spend nothing: the same source is answered right after."""
    limits = ReflectorLimits()
    for _ in range(1000):
        assert limits.admit(20, PLAIN, "192.0.2.1", 0.0) == TOO_SMALL
    assert limits.admit(PADDED_SIZE, PLAIN, "192.0.2.1", 0.0) is None


def test_a_flooding_source_does_not_starve_another() -> None:
    """One sender at 2000 requests a second for 5 s (10x the global cap) gets its own rate;
    a node probing from another address meanwhile (4 plain and 1 redirected request a
    second) is answered every time."""
    limits = ReflectorLimits()
    flood_answered = 0
    other = []
    for tick in range(10_000):
        now = tick / 2000
        flood_answered += limits.admit(PADDED_SIZE, PLAIN, "203.0.113.66", now) is None
        if tick % 500 == 0:
            other.append(limits.admit(PADDED_SIZE, PLAIN, "198.51.100.7", now))
        if tick % 2000 == 1:
            other.append(limits.admit(PADDED_SIZE, REDIRECTED, "198.51.100.7", now))
    assert flood_answered <= SOURCE_BURST + SOURCE_RATE * 5 + 1
    assert limits.dropped[SOURCE_LIMITED] == 10_000 - flood_answered
    assert limits.dropped[GLOBAL_LIMITED] == 0
    assert other == [None] * 25


def test_two_probes_behind_one_address_fit_in_a_burst() -> None:
    """A probe's worst case at one reflector (3 plain tries, 3 redirected) twice at once,
    as two nodes behind one NAT address would send, is answered in full."""
    limits = ReflectorLimits()
    for _ in range(2):
        for request in (PLAIN, PLAIN, PLAIN, REDIRECTED, REDIRECTED, REDIRECTED):
            assert limits.admit(PADDED_SIZE, request, "192.0.2.9", 0.0) is None


def test_redirected_answers_cost_the_asker_more_and_are_capped_in_all() -> None:
    limits = ReflectorLimits()
    answered = sum(
        limits.admit(PADDED_SIZE, REDIRECTED, "192.0.2.1", 0.0) is None for _ in range(100)
    )
    assert answered == SOURCE_BURST // 4  # a quarter of what plain requests get
    plain = sum(limits.admit(PADDED_SIZE, PLAIN, "192.0.2.2", 0.0) is None for _ in range(100))
    assert plain == SOURCE_BURST
    # many sources (forged) asking for redirects: REDIRECT_RATE in all, plain ones still answered
    limits = ReflectorLimits()
    redirected = sum(
        limits.admit(PADDED_SIZE, REDIRECTED, f"10.0.{i // 256}.{i % 256}", 0.0) is None
        for i in range(1000)
    )
    assert redirected == REDIRECT_RATE
    assert limits.dropped[REDIRECT_LIMITED] == 1000 - REDIRECT_RATE
    assert limits.admit(PADDED_SIZE, PLAIN, "192.0.2.3", 0.0) is None


def test_the_global_cap_still_holds_over_many_sources() -> None:
    limits = ReflectorLimits()
    answered = sum(
        limits.admit(PADDED_SIZE, PLAIN, f"10.1.{i // 256}.{i % 256}", 0.0) is None
        for i in range(1000)
    )
    assert answered == GLOBAL_RATE
    assert limits.dropped[GLOBAL_LIMITED] == 1000 - GLOBAL_RATE


def test_the_source_table_is_a_bounded_lru() -> None:
    """10 000 sources leave at most MAX_SOURCES buckets; the oldest go first, a recent
    one keeps its (spent) bucket."""
    limits = ReflectorLimits(rate=1e9)
    for _ in range(int(SOURCE_BURST)):
        assert limits.admit(PADDED_SIZE, PLAIN, "192.0.2.1", 0.0) is None
    for i in range(10_000):
        limits.admit(PADDED_SIZE, PLAIN, f"10.2.{i // 256}.{i % 256}", 0.0)
        if i % 1000 == 0:  # kept recent: still spent
            assert limits.admit(PADDED_SIZE, PLAIN, "192.0.2.1", 0.0) == SOURCE_LIMITED
    assert len(limits.sources) == MAX_SOURCES
    assert "10.2.0.0" not in limits.sources and "10.2.39.15" in limits.sources
    assert limits.sources.evicted == 10_000 + 1 - MAX_SOURCES


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_source_key(host: str, key: str) -> None:
    """An IPv6 host holds a whole /64: its addresses share one bucket."""
    assert source_key(host) == key


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def test_reflector_ignores_unpadded_and_answers_padded_on_loopback() -> None:
    """A real reflector on loopback UDP: an unpadded request sent first is not answered, the
    padded one after it is (the socket reads them in order), no larger than the request."""
    transport, reflector = await start_reflector(("127.0.0.1", 0))
    assert isinstance(reflector, NatReflector)
    address = transport.get_extra_info("sockname")
    loop = asyncio.get_running_loop()
    client, protocol = await loop.create_datagram_endpoint(
        _Client, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    try:
        unpadded = BindingRequest(b"u" * 12)
        padded = BindingRequest(b"p" * 12)
        client.sendto(encode_request(unpadded), address)
        client.sendto(encode_request(padded, size=PADDED_SIZE), address)
        await until(lambda: protocol.received, what="an answer")
        await until(lambda: reflector.answered + reflector.dropped == 2, what="both handled")
        assert reflector.limits.dropped[TOO_SMALL] == 1 and reflector.answered == 1
        assert len(protocol.received) == 1
        answer = decode(protocol.received[0])
        assert isinstance(answer, BindingSuccess) and answer.transaction_id == padded.transaction_id
        assert answer.mapped == client.get_extra_info("sockname")
        assert len(protocol.received[0]) <= PADDED_SIZE
    finally:
        client.close()
        transport.close()
