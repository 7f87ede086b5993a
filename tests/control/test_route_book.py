"""``RouteBook``: one node's verified route leases; a newer epoch replaces the older lease of
its route for every reader and fences it (issue 15)."""

from __future__ import annotations

import time

import pytest

from accessfabric.bench.relay_lab import issue_route
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason
from accessfabric.control.kernel.route_book import RouteBook
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

AUTHORITY = Authority(NodeKey.generate())
HOPS = [NodeKey.generate().node_id, NodeKey.generate().node_id]
BULK = TrafficClass.BULK


def test_usable_leases_leave_out_the_expired_and_the_fenced() -> None:
    book = RouteBook()
    assert book.held("echo", BULK) is None
    live = issue_route(AUTHORITY, 1, HOPS, services=("echo",))
    short = issue_route(AUTHORITY, 2, HOPS, services=("echo",), ttl=1.0)
    fenced = issue_route(AUTHORITY, 3, HOPS, services=("echo",), epoch=1)
    book.put("echo", BULK, [live, short, fenced])
    book.fences.admit(issue_route(AUTHORITY, 3, HOPS, epoch=2).lease)

    assert book.usable("echo", BULK, time.time()) == [live, short]
    assert book.usable("echo", BULK, time.time() + 5) == [live]
    assert book.held("echo", BULK) == [live, short, fenced]
    assert book.usable("web", BULK, time.time()) == []


def test_an_update_replaces_the_older_epoch_where_its_service_and_class_allow() -> None:
    book = RouteBook()
    old = issue_route(AUTHORITY, 7, HOPS, services=("echo", "web"), epoch=1)
    book.put("echo", BULK, [old])
    book.put("web", BULK, [old])
    newer = issue_route(AUTHORITY, 7, HOPS, services=("echo",), epoch=2)

    assert book.update(newer.lease, newer.blob) == 1
    echo = book.held("echo", BULK)
    assert echo is not None and [r.lease.epoch for r in echo] == [2]
    assert echo[0].blob == newer.blob
    # web is not in the newer lease: the old lease stays held, fenced, not usable
    assert book.held("web", BULK) == [old]
    assert book.usable("web", BULK, time.time()) == []
    assert book.fences.epoch(7) == 2

    with pytest.raises(LeaseRejected) as stale:
        book.update(old.lease, old.blob)
    assert stale.value.reason is RejectReason.STALE_EPOCH


def test_a_failing_replacement_listener_neither_stops_the_others_nor_the_replacement() -> None:
    book = RouteBook()
    old = issue_route(AUTHORITY, 8, HOPS, services=("echo",), epoch=1)
    book.put("echo", BULK, [old])
    book.put("echo", TrafficClass.INTERACTIVE, [old])
    heard: list[int] = []

    def broken(key: object, was: object, now: object) -> None:
        raise ValueError("an odd cached document")

    book.on_replaced.append(broken)
    book.on_replaced.append(lambda key, was, now: heard.append(now.lease.epoch))
    newer = issue_route(AUTHORITY, 8, HOPS, services=("echo",), epoch=2)

    assert book.update(newer.lease, newer.blob) == 2
    assert heard == [2, 2]
    for traffic_class in (BULK, TrafficClass.INTERACTIVE):
        held = book.held("echo", traffic_class)
        assert held is not None and [r.lease.epoch for r in held] == [2]
