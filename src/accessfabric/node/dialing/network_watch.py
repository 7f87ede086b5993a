"""``NetworkWatch``: when an address disappears from the machine, end its sessions at once.

A laptop that leaves Wi-Fi loses the address its TCP sessions are bound to; nothing tells
those sockets (no RST comes back), so a session would look alive until its ping timeout
and a stalled route would resume on the same dead session.  The watch subscribes to the
kernel's rtnetlink address notifications (``RTMGRP_IPV4_IFADDR``, ``RTMGRP_IPV6_IFADDR``;
no polling) and reads the address of each ``RTM_DELADDR``.  After a burst settles
(:data:`SETTLE`):

* a session whose carrier reports its local address (``CarrierInfo.local_address``, TCP
  and TLS) and whose address was removed is aborted — it cannot carry a byte again;
* a session whose carrier does not say is pinged, and aborted when it does not answer
  within :func:`probe_timeout`; a QUIC session this node dialled first migrates
  (``SessionConnection.migrate``: a new UDP socket and connection id, whose source
  address the kernel picks from the routes of now), so the ping goes over the new path
  and the connection — streams and all — survives when the peer's address is still
  reachable; a migrated session is pinged again every :data:`REPING` seconds until it
  answers (the new network may come up after the old address went).  On a loaded host
  the answer may be late without the path being dead, so bytes from the peer arriving
  after the probe began count as an answer (a dead path carries none), and the time this
  node's own event loop ran late while waiting (:func:`_answers`) extends the deadline,
  by at most :data:`PROBE_MAX`;
* every other session is left alone (addresses coming and going elsewhere on the
  machine, e.g. other network namespaces' veths, do not disturb it).

An aborted session is dialled again by the peer manager over whatever underlay works
now, and route execution resumes its streams from their last end-to-end ACK.  Where
rtnetlink is unavailable (not Linux) the watch does nothing and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from accessfabric.node.streams.connection import SessionConnection, session_clock
from accessfabric.observe.log_format import log_event
from accessfabric.timeouts import cancel_and_wait

log = logging.getLogger(__name__)

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
SETTLE = 0.05
"""Seconds to let a burst of notifications (flush, link up, route) end before probing."""
PROBE_MIN, PROBE_MAX = 1.0, 3.0
RTM_DELADDR = 21
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLMSG_HEADER = 16
IFADDRMSG = 8
MAX_PROBES = 256
REPING = 0.2
"""Seconds between PINGs to a migrated session until one is answered (``_answers``)."""
LATE = 0.02
"""A wait that returned more than this late (seconds) counts as our loop running late."""


def probe_timeout(srtt: float | None) -> float:
    """How long a session may take to answer the probe: 4 x its RTT, within 1..3 s."""
    return max(PROBE_MIN, min(PROBE_MAX, 4 * (srtt or 0.0)))


class NetworkWatch:
    def __init__(self, connections: Callable[[], list[SessionConnection]]) -> None:
        self._connections = connections
        self._socket: socket.socket | None = None
        self._changed = asyncio.Event()
        self._removed: set[IPAddress] = set()
        self._task: asyncio.Task[None] | None = None
        self.changes = 0
        self.aborted = 0
        self.migrated = 0
        self.on_change: Callable[[], None] | None = None
        """Called after an address was removed (the NAT probe runs again)."""

    async def start(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except (AttributeError, OSError) as error:
            log_event(log, "network changes not watched", error=error)
            return
        sock.setblocking(False)
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._task is not None:
            await cancel_and_wait([self._task])

    def _readable(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while data := self._socket.recv(65536):
                removed = removed_addresses(data)
                if removed and len(self._removed) < MAX_PROBES:
                    self._removed.update(removed)
                    self._changed.set()

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(SETTLE)
            self._changed.clear()
            try:
                await self._handle_change()
            except Exception:  # a bug must not end the watch silently
                log.exception("network change handling failed")

    async def _handle_change(self) -> None:
        """One settled batch of address removals: abort, probe, tell the node."""
        removed, self._removed = self._removed, set()
        self.changes += 1
        live = [c for c in self._connections() if c.is_ready]
        gone = [c for c in live if _address(c.info.local_address) in removed]
        unknown = [c for c in live if not c.info.local_address][:MAX_PROBES]
        log_event(
            log, "address removed", addresses=",".join(sorted(map(str, removed))),
            sessions_gone=len(gone), sessions_probed=len(unknown),
        )  # fmt: skip
        for connection in gone:
            self._abort(connection, f"its local address {connection.info.local_address} is gone")
        await asyncio.gather(*(self._probe(c) for c in unknown))
        if self.on_change is not None:
            self.on_change()

    def _abort(self, connection: SessionConnection, why: str) -> None:
        self.aborted += 1
        log_event(
            log, "session lost with a network change", logging.WARNING,
            peer=connection.session.peer_node_id, address=connection.info.peer_address, why=why,
        )  # fmt: skip
        connection.abort()

    async def _probe(self, connection: SessionConnection) -> None:
        timeout = probe_timeout(connection.session.rtt.srtt)
        migrated = False
        try:
            migrated = await connection.migrate()
            if migrated:
                self.migrated += 1
                log_event(
                    log, "session migrated", peer=connection.session.peer_node_id,
                    address=connection.info.peer_address,
                )  # fmt: skip
        except Exception as error:  # no socket for the new path, or a bug: the ping decides
            log_event(log, "migration failed", logging.WARNING, error=repr(error))
        since = session_clock()  # bytes after this came over the path in use now
        answered = await _answers(connection, timeout, REPING if migrated else None, since)
        if answered is False:
            self._abort(connection, f"no answer to a ping within {timeout:.1f} s")


async def _answers(
    connection: SessionConnection, timeout: float, every: float | None, since: float
) -> bool | None:
    """Whether ``connection`` answers a PING within ``timeout`` (None: the session ended
    meanwhile).  With ``every``, a new PING goes out every ``every`` seconds until one is
    answered: after a migration the first may leave before the new network has a route
    (the address goes before the next one is up) and be lost, and QUIC would resend it
    only at its backed-off probe timeout; a fresh PING leaves at once on whatever path
    works by then, and its acknowledgement makes QUIC resend the lost ones.  Without
    ``every``, one PING.

    Allowing for host load (issue 22: a migrated session re-dialled at load 11 with no
    answer within 1 s), the deadline moves, up to ``PROBE_MAX`` in all, but only a PONG
    says the path is alive: by the time our loop ran late (a wait that returned later
    than asked: we could not look), and by another ``timeout`` when the peer's bytes
    arrived after ``since`` (session clock; taken after a migration) yet no PONG — the
    PONG may be queued behind them or behind work at either end.  Bytes are only a
    reason to wait longer, never an answer: a loop running late may read bytes that
    came over the old path before it went."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    extended = 0.0
    pings: list[asyncio.Future[float]] = []
    try:
        while True:
            if not pings or every is not None:
                pings.append(asyncio.ensure_future(connection.ping()))
            left = deadline - loop.time()
            if left > 0:
                wait = left if every is None else min(left, every)
                asked = loop.time()
                done, _ = await asyncio.wait(
                    pings, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for ping in done:
                    return True if ping.exception() is None else None  # None: session ended
                now = loop.time()
                late = min(now - asked - wait, PROBE_MAX - extended)
                if late > LATE:  # we could not look for that long: it does not count
                    deadline = max(deadline, now) + late
                    extended += late
            if loop.time() < deadline:
                continue
            heard = connection.session.last_receive
            if heard > since and extended < PROBE_MAX:  # the path carries bytes: wait more
                more = min(timeout, PROBE_MAX - extended)
                deadline, extended, since = loop.time() + more, extended + more, heard
                continue
            return False
    finally:
        for ping in pings:
            ping.cancel()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def removed_addresses(data: bytes) -> set[IPAddress]:
    """The addresses of the ``RTM_DELADDR`` messages in one rtnetlink datagram."""
    out: set[IPAddress] = set()
    offset = 0
    while offset + NLMSG_HEADER <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < NLMSG_HEADER or offset + length > len(data):
            break
        if kind == RTM_DELADDR and length >= NLMSG_HEADER + IFADDRMSG:
            at = offset + NLMSG_HEADER + IFADDRMSG
            end = offset + length
            while at + 4 <= end:
                size, attr = struct.unpack_from("=HH", data, at)
                if size < 4:
                    break
                if attr in (IFA_ADDRESS, IFA_LOCAL) and size - 4 in (4, 16):
                    out.add(ipaddress.ip_address(bytes(data[at + 4 : at + size])))
                at += (size + 3) & ~3
        offset += (length + 3) & ~3
    return out
