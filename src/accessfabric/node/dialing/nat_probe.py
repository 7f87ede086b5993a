"""NAT type and inbound reachability, probed from two entries (issue 22, ADR 0026).

Entries run a *reflector* (``[nat] listen``): a UDP socket answering STUN Binding
requests (:mod:`accessfabric.wire.stun`) with the address it saw them come from.  A node
with ``[nat] reflectors`` (two or more, on different entries) probes every
``[nat] interval`` seconds, RFC 3489/5780-style, with two fresh UDP sockets:

1. socket 1 asks reflector A and reflector B: the two mapped addresses.  No answer at
   all: type ``unknown`` (UDP blocked, or no reflector up).  Mapped address equal to the
   socket's own local address: ``none`` (no NAT).  A and B saw different mappings:
   the mapping is endpoint-dependent, ``symmetric``; the same: endpoint-independent.
2. socket 2 asks A (its mapping at A, which only A has talked to), then socket 1 asks B
   to answer to socket 2's *port* (RESPONSE-PORT: the reflector answers to the request's
   source address, only the port changed).  Socket 2
   receiving B's answer — from an address it never sent to — means the NAT lets
   unsolicited traffic in: ``reachable``; with an endpoint-independent mapping that is a
   ``full_cone``.
3. Otherwise socket 2 asks A to answer from another port (CHANGE-REQUEST change-port):
   received means address-restricted filtering (``restricted``), not received
   ``port_restricted``.

The result goes into heartbeats (``nat.type``, and ``nat.reachable`` = listening *and*
reachable), ``status`` (``host``: ``nat_type``, ``nat_mapping``, ``nat_reachable``,
``nat_mapped``) and ``accessfabric netcheck``.  It describes UDP (the QUIC carrier);
a NAT treats TCP alike in practice (Linux conntrack does), but this is not probed.

Every request is padded to ``PADDED_SIZE`` (64 bytes, a STUN PADDING attribute).  A
reflector ignores shorter requests, so an answer (32 bytes for IPv4, 44 for IPv6) is
never larger than its request: no amplification.  It answers each source (an IPv4
address, an IPv6 /64) at most ``SOURCE_RATE`` times a second, RESPONSE-PORT answers at a
quarter of that and at most ``REDIRECT_RATE`` a second in all, and everyone together at
most ``GLOBAL_RATE`` a second (``node/dialing/reflector_limits.py``): a forged source address can
aim answers at someone else, but no more than one source's rate at one address, and a
flooding sender does not starve other nodes' probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from accessfabric.node.dialing.reflector_limits import (
    GLOBAL_LIMITED,
    TOO_SMALL,
    ReflectorLimits,
    source_key,
)
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog
from accessfabric.timeouts import cancel_and_wait
from accessfabric.wire.stun import (
    PADDED_SIZE,
    BindingRequest,
    BindingSuccess,
    StunError,
    decode,
    encode_request,
    encode_success,
)

log = logging.getLogger(__name__)

TRIES = 3
"""Requests sent per question (UDP loses packets), spread over the timeout."""

Address = tuple[str, int]


# ------------------------------------------------------------------ reflector


class NatReflector(asyncio.DatagramProtocol):
    """The entry side: answers Binding requests with the address they came from."""

    def __init__(self, limits: ReflectorLimits | None = None, clock: Any = time.monotonic) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        # what is answered (padding, per-source and global rates), and the counts
        self.limits = limits if limits is not None else ReflectorLimits()
        self._clock = clock
        self._dropped_log = RateLimitedLog(log)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    @property
    def answered(self) -> int:
        return self.limits.answered

    @property
    def dropped(self) -> int:
        """Requests not answered, for any reason (``limits.dropped`` per reason)."""
        return sum(self.limits.dropped.values())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            request = decode(data)
        except StunError:
            return
        if not isinstance(request, BindingRequest) or self.transport is None:
            return
        host, port = str(addr[0]), int(addr[1])
        now = self._clock()
        reason = self.limits.admit(len(data), request, host, now)
        if reason is not None:
            if reason != TOO_SMALL:  # an unpadded request (any STUN client) is just ignored
                self._log_drop(reason, host, now)
            return
        answer = encode_success(BindingSuccess(request.transaction_id, (host, port)))
        destination = (host, request.response_port or port)
        if not request.change_port:
            self.transport.sendto(answer, destination)
            return
        own = self.transport.get_extra_info("sockname")
        family = socket.AF_INET6 if ":" in str(own[0]) else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as other:
            other.setblocking(False)
            other.bind((own[0], 0))  # same address, another port
            other.sendto(answer, destination)

    def _log_drop(self, reason: str, host: str, now: float) -> None:
        suppressed = self._dropped_log.admit(reason, now)  # a few fixed keys: bounded
        if suppressed is None:
            return
        fields: dict[str, Any] = {
            "reason": reason, "dropped": self.limits.dropped[reason], "suppressed": suppressed,
        }  # fmt: skip
        if reason != GLOBAL_LIMITED:
            fields["source"] = source_key(host)  # the first of this reason per 10 s
        log_event(log, "nat reflector over its rate", logging.WARNING, **fields)


async def start_reflector(listen: Address) -> tuple[asyncio.DatagramTransport, NatReflector]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(NatReflector, local_addr=listen)
    log_event(log, "nat reflector", listen=f"{listen[0]}:{transport.get_extra_info('sockname')[1]}")
    return transport, protocol


# ------------------------------------------------------------------ probe


@dataclass(frozen=True, slots=True)
class NatReport:
    type: str
    """One of ``control.client.facts.NAT_TYPES``: none, full_cone, restricted, port_restricted,
    symmetric, unknown."""
    mapping: str | None
    """``endpoint-independent`` / ``endpoint-dependent``; None: not determined."""
    reachable: bool | None
    """An unsolicited packet from a new address reached the node; None: not determined."""
    mapped: str | None
    """The node's address as reflector A saw it (``host:port``)."""
    answered: int
    """Reflectors that answered."""

    def describe(self) -> str:
        if self.answered == 0:
            return f"{self.type} (no reflector answered)"
        reach = {None: "inbound not determined", True: "inbound reachable"}.get(
            self.reachable, "inbound NOT reachable"
        )
        mapping = f"mapping {self.mapping}, " if self.mapping else ""
        return f"{self.type} ({mapping}{reach}, seen as {self.mapped})"


class _ProbeSocket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[Address]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = decode(data)
        except StunError:
            return
        if isinstance(message, BindingSuccess):
            future = self.waiting.get(message.transaction_id)
            if future is not None and not future.done():
                future.set_result(message.mapped)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable: the question times out

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def _ask(
    sender: _ProbeSocket,
    receiver: _ProbeSocket,
    reflector: Address,
    timeout: float,
    *,
    change_port: bool = False,
    response_port: int | None = None,
) -> Address | None:
    """Send a Binding request from ``sender``; the answer as ``receiver`` got it, or None."""
    transaction_id = secrets.token_bytes(12)
    request = encode_request(BindingRequest(transaction_id, change_port, response_port),
                             size=PADDED_SIZE)  # fmt: skip
    future: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
    receiver.waiting[transaction_id] = future
    try:
        for _ in range(TRIES):
            assert sender.transport is not None
            sender.transport.sendto(request, reflector)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for on 3.11
                async with asyncio.timeout(timeout / TRIES):  # can lose a cancel
                    return await asyncio.shield(future)
        return None
    finally:
        receiver.waiting.pop(transaction_id, None)
        future.cancel()


def _local_address(reflector: Address, family: int) -> str | None:
    """The source address the kernel picks toward ``reflector`` (no packet is sent)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(reflector)
            return str(probe.getsockname()[0])
    except OSError:
        return None


async def _resolve(reflectors: Sequence[Address]) -> tuple[int, list[Address]]:
    loop = asyncio.get_running_loop()
    resolved: list[tuple[int, Address]] = []
    for host, port in reflectors:
        with contextlib.suppress(OSError):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            if infos:
                kind, _, _, _, sockaddr = infos[0]
                resolved.append((int(kind), (str(sockaddr[0]), int(sockaddr[1]))))
    if not resolved:
        return int(socket.AF_INET), []
    first = resolved[0][0]
    return first, [address for f, address in resolved if f == first]


async def probe_nat(reflectors: Sequence[Address], timeout: float = 1.0) -> NatReport:
    """Classify this host's NAT with the reflectors (the module doc); never raises OSError."""
    family, addresses = await _resolve(reflectors)
    unknown = NatReport("unknown", None, None, None, 0)
    if not addresses:
        return unknown
    loop = asyncio.get_running_loop()
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    transports: list[asyncio.DatagramTransport] = []
    try:
        sockets = []
        for _ in range(2):
            transport, protocol = await loop.create_datagram_endpoint(
                _ProbeSocket, local_addr=(wildcard, 0), family=family
            )
            transports.append(transport)
            sockets.append(protocol)
        first, second = sockets
        a = addresses[0]
        mapped_a = await _ask(first, first, a, timeout)
        others = [await _ask(first, first, other, timeout) for other in addresses[1:] if other != a]
        seen = [m for m in (mapped_a, *others) if m is not None]
        if mapped_a is None:
            return NatReport("unknown", None, None, None, len(seen))
        mapped = f"{mapped_a[0]}:{mapped_a[1]}"
        answered_b = [m for m in others if m is not None]
        if answered_b and any(m != mapped_a for m in answered_b):
            mapping: str | None = "endpoint-dependent"
        elif answered_b:
            mapping = "endpoint-independent"
        else:
            mapping = None  # only one reflector answered: the mapping is not determined
        no_nat = mapped_a == (_local_address(a, family), first.port)
        # inbound: B answers to socket 2's mapping, which only A has seen
        mapped_second = await _ask(second, second, a, timeout)
        reachable: bool | None = None
        if mapped_second is not None and len(addresses) > 1:
            b = next((o for o in addresses[1:] if o != a), None)
            if b is not None:
                got = await _ask(first, second, b, timeout, response_port=mapped_second[1])
                reachable = got is not None
        if no_nat:
            return NatReport("none", "endpoint-independent", reachable, mapped, len(seen))
        if mapping == "endpoint-dependent":
            return NatReport("symmetric", mapping, reachable, mapped, len(seen))
        if mapping is None or reachable is None:
            return NatReport("unknown", mapping, reachable, mapped, len(seen))
        if reachable:
            return NatReport("full_cone", mapping, True, mapped, len(seen))
        other_port = await _ask(second, second, a, timeout, change_port=True)
        kind = "restricted" if other_port is not None else "port_restricted"
        return NatReport(kind, mapping, False, mapped, len(seen))
    except OSError as error:
        log_event(log, "nat probe failed", logging.WARNING, error=str(error))
        return unknown
    finally:
        for transport in transports:
            transport.close()


# ------------------------------------------------------------------ the node's part


class NatMonitor:
    """Runs the reflector (``[nat] listen``) and re-probes every ``[nat] interval``."""

    def __init__(self, reflectors: Sequence[Address], listen: Address | None,
                 interval: float, timeout: float) -> None:  # fmt: skip
        self.reflectors = tuple(reflectors)
        self.listen = listen
        self.interval = interval
        self.timeout = timeout
        self.report: NatReport | None = None
        self.reflector: NatReflector | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = asyncio.Event()

    async def start(self) -> None:
        if self.listen is not None:
            self._transport, self.reflector = await start_reflector(self.listen)
        if len(self.reflectors) >= 2:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self._transport is not None:
            self._transport.close()

    def probe_soon(self) -> None:
        """Probe again now (the node's addresses changed)."""
        self._again.set()

    async def _run(self) -> None:
        while True:
            self._again.clear()
            try:
                report = await probe_nat(self.reflectors, self.timeout)
            except Exception:  # a bug must not end probing silently
                log.exception("nat probe failed")
                report = NatReport("unknown", None, None, None, 0)
            if report != self.report:
                log_event(
                    log, "nat probe", type=report.type, mapping=report.mapping or "-",
                    reachable=report.reachable, mapped=report.mapped or "-",
                    answered=report.answered,
                )  # fmt: skip
            self.report = report
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for on 3.11
                async with asyncio.timeout(self.interval):  # can lose a cancel
                    await self._again.wait()

    def status(self) -> dict[str, Any]:
        report = self.report
        return {
            "nat_type": report.type if report else "unknown",
            "nat_mapping": report.mapping if report else None,
            "nat_reachable": report.reachable if report else None,
            "nat_mapped": report.mapped if report else None,
        }
