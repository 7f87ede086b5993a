"""``DataPlane``: every session's events, and where an OPEN_STREAM goes.

The runtime attaches every session (accepted and dialled) with :meth:`DataPlane.attach`;
the data plane then sees each session event synchronously, before any ACK leaves.  Each
OPEN_STREAM goes to the one :class:`~.stream_router.StreamRouter`, which decides it —
refused, relayed, adopted (resume), served or direct — by these rules:

* Access (:mod:`.access`, default deny): every stream this node would serve — a direct
  OPEN_STREAM (no route lease; the opener is the session's peer) and the destination of
  a route lease (fresh or RESUME; the opener is the lease's source, ``hops[0]``) — is
  checked here, the one place, before anything else serves it.  A refusal resets it with
  ``ACCESS_DENIED``, is counted in ``refused`` (``access denied``) and in
  ``access.refused``, and logs ``access denied`` at most once per 10 s per (peer,
  service) with the count of lines suppressed.  Openers' node records are learned from
  HELLO (SessionReady) and from sealed opens' key exchanges.

* OPEN_STREAM with a route lease: the lease is checked (:mod:`.lease_check`); a refusal
  resets the stream with ``ROUTE_REJECTED`` and logs ``route lease refused`` with the
  reason.  An inner hop is handed to the :class:`~accessfabric.node.relaying.relay.Relay`; the
  destination serves the stream as a :class:`ResumableStream`, kept by resume token.
  When the OPEN_STREAM carries a sealing key exchange, the handler gets a
  :class:`~accessfabric.node.streams.sealed_stream.SealedStream` over it (plaintext in and out;
  the sealing survives resumes, it sits above the resumable end).  A relayed open
  (the lease has hops between source and destination) without one is refused
  (``REFUSED_STREAM``, counted as ``unsealed relayed stream``): docs/sealing.md.  An
  open already gone from its session (OPEN_STREAM and RESET_STREAM in one batch) is
  skipped: nothing raises into the session's event callback.
* OPEN_STREAM with RESUME at the destination adopts the kept stream end: from its
  snapshot when its session died, or by taking it over (the old hop stream is reset with
  ``ROUTE_REJECTED``) when the old path still looks alive.  A token this node never saw,
  resumed from offset 0 (the source received nothing from here), names a stream whose
  first path failed before reaching the destination: it is served as a new stream (an
  empty snapshot is adopted, the source resends from byte 0; a sealed one must carry its
  original key exchange after a proof made with the resume key that exchange gives; a
  proof without it is refused, never served unsealed).
  Other unknown tokens, and tokens of stream ends already let go (remembered for twice
  the resume window and until the last lease that carried the stream here expires), are
  reset; so is a fresh OPEN_STREAM naming a stream served here before (``stream
  replayed``): a sealed open and its records, sent again by a relay, would derive the
  same keys.  A sealed stream (its first OPEN_STREAM carried a sealing key exchange) is
  adopted only with a fresh resume proof made with its resume key
  (:mod:`accessfabric.sealing.resume_proof`): a relay knows the token, not the key.  A
  missing, invalid or replayed proof is reset with ``AUTHENTICATION_FAILED``, logged
  (``resume refused``) and counted in ``refused``; the kept stream end is not touched.
* ``refused`` counts refusals by label (a reason's text before ``:``); at most
  ``REFUSED_LABELS`` distinct labels, later new ones count as ``other``: it is exported
  as ``accessfabric_streams_refused_total{reason}``.
* Every other event goes to the relay (ACK forwarding) and the hooks (the route manager's
  failover triggers at a source, tenant accounting).

:meth:`DataPlane.incoming` tells the runtime what to dispatch for an accepted stream:
nothing (refused, relayed, adopted), the sealed or resumable wrapper, or the plain stream
(no route lease).  Served stream ends are kept, swept and let go by
:class:`~.served_ends.ServedEnds`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.control.kernel.fence import FenceBook
from accessfabric.node.dialing.peers import PeerSessionManager
from accessfabric.node.relaying.relay import Relay
from accessfabric.node.relaying.relay_limits import RelayLimits
from accessfabric.node.routing.lease_check import LeaseChecker
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.node.serving.served_ends import ServedEnds
from accessfabric.node.serving.stream_router import StreamRouter
from accessfabric.node.streams.connection import (
    FabricStream,
    HopStream,
    SessionConnection,
    termination_error,
)
from accessfabric.node.streams.peer_pressure_memory import LAPSE_AFTER, PeerPressureMemory
from accessfabric.node.streams.resumable import DEFAULT_RESUME_WINDOW
from accessfabric.node.streams.stream_sealing import SealingKeys
from accessfabric.session import events as ev

SWEEP_INTERVAL = 1.0

EventHook = Callable[[SessionConnection, ev.Event], None]


class DataPlane:
    def __init__(
        self,
        node_id: str,
        peers: PeerSessionManager,
        authority_key: bytes | None,
        *,
        relay_limits: RelayLimits | None = None,
        resume_window: float = DEFAULT_RESUME_WINDOW,
        sealing_key: X25519PrivateKey | None = None,
        sealing_keys: SealingKeys | None = None,
        access: ServiceAccess | None = None,
        fences: FenceBook | None = None,
    ) -> None:
        """``sealing_key``: this node's static X25519 key, to open sealed streams and bind
        their resumes (without it sealed opens are refused, resumes are token-only);
        ``sealing_keys``: the other nodes' sealing keys (a sealed stream's opener);
        ``access``: who may open which service here (None: nobody)."""
        self.node_id = node_id
        self.resume_window = resume_window
        self.relay = Relay(peers, relay_limits, orphan_grace=resume_window)
        self.ends = ServedEnds(resume_window)
        self.router = StreamRouter(
            node_id,
            access if access is not None else ServiceAccess(node_id, {}, authority_key),
            LeaseChecker(node_id, authority_key, fences=fences),
            self.relay,
            self.ends,
            sealing_key=sealing_key,
            sealing_keys=sealing_keys,
        )
        self.hooks: list[EventHook] = []
        """More per-event hooks (the route manager at a source adds one)."""
        self.peer_pressure = PeerPressureMemory()
        """Each peer node's last NODE_PRESSURE levels: a new session to it starts from them."""
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ wiring

    def attach(self, connection: SessionConnection) -> None:
        connection.on_event.append(lambda event: self._on_event(connection, event))
        self._recall_pressure(connection)
        connection.when_closed(lambda ended: self._ended(connection, ended))
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    def incoming(self, stream: HopStream) -> FabricStream | None:
        """What the runtime dispatches for an accepted stream (None: nothing)."""
        return self.router.incoming(stream)

    def _recall_pressure(self, connection: SessionConnection) -> None:
        """A session to a peer that reported pressure lately starts from those levels."""
        session = connection.session
        peer = session.peer_node_id
        if peer is None or session.peer_pressure is not None:
            return
        levels = self.peer_pressure.recall(peer, time.monotonic())
        if levels is not None:
            session.assume_peer_pressure(*levels, lapse_after=LAPSE_AFTER)

    def _ended(self, connection: SessionConnection, ended: ev.SessionTerminated) -> None:
        if self._closed:
            return
        error = termination_error(ended)
        for wrapper in list(self.ends.served.values()):
            if wrapper.connection is connection and not wrapper.finished:
                wrapper.mark_broken(error)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.ends.sweep(time.monotonic())

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._closed = True
        await self.relay.aclose()

    # ------------------------------------------------------------ events

    def _on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        if type(event) is ev.StreamOpened:
            assert isinstance(event, ev.StreamOpened)
            self.router.route(connection, event)
        else:
            if type(event) is ev.SessionReady:
                assert isinstance(event, ev.SessionReady)
                self.router.access.learn_record(event.peer_node_record, event.peer_node_id)
                self._recall_pressure(connection)
            elif type(event) is ev.PeerPressure:
                assert isinstance(event, ev.PeerPressure)
                peer = connection.session.peer_node_id
                if peer is not None:
                    levels = (event.queue, event.cpu, event.memory, event.network)
                    self.peer_pressure.note(peer, levels, time.monotonic())
            self.relay.on_event(connection, event)
        for hook in self.hooks:
            hook(connection, event)
