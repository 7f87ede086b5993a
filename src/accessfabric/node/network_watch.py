"""``NetworkWatch``: when the machine's addresses or links change, find the dead sessions.

A laptop that leaves Wi-Fi loses the address its TCP sessions are bound to; nothing tells
those sockets (no RST comes back), so a session would look alive until its ping timeout
and a stalled route would resume on the same dead session.  The watch subscribes to the
kernel's rtnetlink address and link notifications (``RTMGRP_LINK``,
``RTMGRP_IPV4_IFADDR``, ``RTMGRP_IPV6_IFADDR``: no polling, no parsing — any message is a
change).  After a change settles (:data:`SETTLE`) it pings every ready session; one that
does not answer within :func:`probe_timeout` is aborted, so the peer manager dials again
(over whatever underlay works now) and route execution resumes its streams from their
last end-to-end ACK on the new session.

Where rtnetlink is unavailable (not Linux) the watch does nothing and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from accessfabric.node.connection import SessionConnection
from accessfabric.node.log_format import log_event

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
SETTLE = 0.05
"""Seconds to let a burst of notifications (flush, link up, route) end before probing."""
PROBE_MIN, PROBE_MAX = 0.3, 2.0
MAX_PROBES = 256


def probe_timeout(srtt: float | None) -> float:
    """How long a session may take to answer the probe: 4 x its RTT, within 0.3..2 s."""
    return max(PROBE_MIN, min(PROBE_MAX, 4 * (srtt or 0.0)))


class NetworkWatch:
    def __init__(self, connections: Callable[[], list[SessionConnection]]) -> None:
        self._connections = connections
        self._socket: socket.socket | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.changes = 0
        self.aborted = 0

    async def start(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _readable(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._socket.recv(65536):  # drain: the content does not matter
                pass
        self._changed.set()

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(SETTLE)
            self._changed.clear()
            self.changes += 1
            live = [c for c in self._connections() if c.is_ready][:MAX_PROBES]
            log_event(log, "network changed", sessions=len(live))
            await asyncio.gather(*(self._probe(c) for c in live))

    async def _probe(self, connection: SessionConnection) -> None:
        timeout = probe_timeout(connection.session.rtt.srtt)
        try:
            await asyncio.wait_for(connection.ping(), timeout)
        except TimeoutError:
            self.aborted += 1
            log_event(
                log, "session lost with a network change", logging.WARNING,
                peer=connection.session.peer_node_id, address=connection.info.peer_address,
                timeout_s=round(timeout, 2),
            )  # fmt: skip
            connection.abort()
        except Exception:  # the session ended meanwhile: nothing to do
            return
