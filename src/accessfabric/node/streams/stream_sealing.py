"""Which service streams the node seals, and the other nodes' sealing keys it knows.

Policy (docs/sealing.md, "When streams are sealed"):

* a stream on a **relayed** route (a lease with hops between source and destination) is
  always sealed to the destination.  Without the destination's sealing key the open
  fails (:class:`SealingKeyUnknown`): plaintext never goes through a relay.
* a stream on a **one-hop** route is sealed too unless ``[sealing] one_hop = false``;
  when the destination's key is unknown it goes unsealed (the session's TLS ends at the
  destination).  An unsealed stream never resumes onto a relayed route.
* direct streams to a static peer's ``services`` (no route lease) are not sealed: one
  TLS session from end to end.

The node opens its sealed streams with one cipher suite (``[sealing] cipher``;
``auto``: AES-256-GCM when :func:`cpu_accelerates_aes`, else ChaCha20-Poly1305); as a
destination it accepts every suite the opener names.

:class:`SealingKeys` holds node id -> X25519 sealing public key, from the control plane
directory's signed node records (verified with the authority key), ``[[peers]]
sealing_key`` and ``[sealing.keys]``; :meth:`SealingKeys.resolve` asks the directory again
(rate-limited) when a key is missing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.objects import NodeRecord, RouteLease
from accessfabric.control.kernel.rejections import SignedObjectRejected
from accessfabric.control.kernel.verify import verify_node_record
from accessfabric.observe.log_format import log_event
from accessfabric.sealing import SealInitiator
from accessfabric.sealing.handshake import KEY_SIZE, stream_context
from accessfabric.sealing.records import CipherSuite

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 2.0
"""Least seconds between two directory look-ups for a missing key."""


CPUINFO = Path("/proc/cpuinfo")


def cpu_accelerates_aes(cpuinfo: Path = CPUINFO) -> bool:
    """Whether the CPU has AES instructions: the ``aes`` flag (x86, AES-NI) or feature
    (ARMv8 crypto extensions) in /proc/cpuinfo.  False when it cannot tell (no such file:
    not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        name, _, values = line.partition(":")
        if name.strip().lower() in ("flags", "features") and "aes" in values.split():
            return True
    return False


def sealing_cipher(setting: str, cpuinfo: Path = CPUINFO) -> CipherSuite:
    """The suite for ``[sealing] cipher``: a suite's name, or ``auto`` (AES-256-GCM where
    the CPU accelerates AES, ChaCha20-Poly1305 elsewhere: it is the faster one without
    AES instructions, and constant-time in software)."""
    if setting != "auto":
        return CipherSuite.from_label(setting)
    if cpu_accelerates_aes(cpuinfo):
        return CipherSuite.AES_256_GCM
    return CipherSuite.CHACHA20_POLY1305


class SealingKeyUnknown(ConnectionError):
    """A relayed stream cannot be sealed: the destination's sealing key is not known."""


def relayed(lease: RouteLease) -> bool:
    """The route crosses at least one relay (a node that is neither source nor destination)."""
    return len(lease.hops) > 2


def _canonical(node_id: str) -> str:
    try:
        return canonical_node_id(node_id)
    except ValueError:
        return node_id


class SealingKeys:
    """Sealing public keys of other nodes, by node id."""

    def __init__(
        self,
        authority_key: bytes | None = None,
        static: Mapping[str, bytes] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authority_key = authority_key
        self.clock = clock
        self._keys: dict[str, bytes] = {}
        self._expires: dict[str, float] = {}
        """When a key learned from a signed node record stops counting (the record's
        expiry, wall-clock seconds); configured keys are not here and never expire."""
        self._configured: dict[str, bytes] = {}
        """Keys from the configuration: what a node falls back to when a record learned
        for the same node expires."""
        self.refresh: Callable[[], Awaitable[Mapping[str, Any] | None]] | None = None
        """Fetch the directory again (the control link sets it); its entries are learned."""
        self._last_refresh = float("-inf")
        for node_id, key in (static or {}).items():
            self.add(node_id, key)

    def add(self, node_id: str, key: bytes, *, expires: float | None = None) -> None:
        """Know ``key`` for ``node_id``; until ``expires`` (wall clock) when it comes from a
        signed node record, for good when ``None`` (configuration)."""
        if len(key) != KEY_SIZE:
            raise ValueError(f"a sealing key is {KEY_SIZE} raw bytes, got {len(key)}")
        node_id = _canonical(node_id)
        self._keys[node_id] = bytes(key)
        if expires is None:
            self._configured[node_id] = bytes(key)
            self._expires.pop(node_id, None)
        else:
            self._expires[node_id] = expires

    def get(self, node_id: str) -> bytes | None:
        """The key, or None when unknown or its record has expired (then it is forgotten:
        a node dropped from the directory is not trusted on a stale record; a key configured
        for the node counts again)."""
        node_id = _canonical(node_id)
        expires = self._expires.get(node_id)
        if expires is not None and self.clock() >= expires:
            del self._keys[node_id], self._expires[node_id]
            configured = self._configured.get(node_id)
            if configured is None:
                return None
            self._keys[node_id] = configured
        return self._keys.get(node_id)

    def _learn(self, record: NodeRecord) -> None:
        self.add(record.node_id, record.sealing_public_key, expires=record.expires_ms / 1000)

    def __len__(self) -> int:
        return len(self._keys)

    def learn_directory(self, directory: Mapping[str, Any] | None) -> int:
        """Learn every directory entry whose signed node record verifies; how many."""
        if not directory or self.authority_key is None:
            return 0
        learned = 0
        now = self.clock()
        for entry in directory.get("entries", []) or []:
            if not isinstance(entry, Mapping):
                continue
            try:
                blob = base64.b64decode(str(entry.get("record", "")), validate=True)
                record = verify_node_record(blob, self.authority_key, now)
            except (SignedObjectRejected, ValueError, TypeError):
                continue
            self._learn(record)
            learned += 1
        return learned

    def learn_record(self, blob: bytes) -> str | None:
        """Learn the key of one signed node record (an opener sends its own with a sealed
        open); the node id, or None when it does not verify or no authority key is set."""
        if not blob or self.authority_key is None:
            return None
        try:
            record = verify_node_record(blob, self.authority_key, self.clock())
        except (SignedObjectRejected, ValueError, TypeError):
            return None
        self._learn(record)
        return record.node_id

    async def resolve(self, node_id: str) -> bytes | None:
        """The key, asking the directory once more (at most every 2 s) when it is missing."""
        key = self.get(node_id)
        if key is not None or self.refresh is None:
            return key
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_INTERVAL:
            return None
        self._last_refresh = now
        with contextlib.suppress(Exception):  # unreachable control plane: what we have
            self.learn_directory(await self.refresh())
        return self.get(node_id)


class StreamSealing:
    """The source side of the policy: the :class:`SealInitiator` for a stream on a route."""

    def __init__(
        self,
        node_id: str,
        static_key: X25519PrivateKey,
        keys: SealingKeys,
        *,
        one_hop: bool = True,
        cipher: CipherSuite = CipherSuite.CHACHA20_POLY1305,
    ) -> None:
        self.node_id = node_id
        self.static_key = static_key
        self.keys = keys
        self.one_hop = one_hop
        self.cipher = cipher
        """The suite of every stream this node opens (:func:`sealing_cipher`)."""
        self.unsealed_one_hop = 0
        """One-hop streams opened unsealed because the destination's key was unknown."""
        self.own_record: Callable[[], bytes | None] = lambda: None
        """This node's signed node record, sent with each sealed open (the control link
        sets it), so destinations that never saw this node in their directory can check
        its sealing key."""

    async def initiator(
        self, lease: RouteLease, service: str, resume_token: bytes
    ) -> SealInitiator | None:
        """None: this stream goes unsealed (a one-hop route, see the module docstring)."""
        through_relay = relayed(lease)
        if not through_relay and not self.one_hop:
            return None
        destination = lease.hops[-1]
        key = await self.keys.resolve(destination)
        if key is None:
            if through_relay:
                raise SealingKeyUnknown(
                    f"cannot seal the stream to {service!r} for route {lease.route_id}: no "
                    f"sealing key known for destination node {destination} (not in the "
                    "control plane's directory, no [sealing.keys] or [[peers]] sealing_key "
                    "entry); a relayed stream is never sent unsealed"
                )
            self.unsealed_one_hop += 1
            log_event(
                log, "stream not sealed", logging.INFO, service=service,
                destination=destination, reason="destination sealing key unknown, one hop",
            )  # fmt: skip
            return None
        return SealInitiator(
            self.static_key,
            self.node_id,
            key,
            stream_context(service, resume_token),
            random_bytes=secrets.token_bytes,
            opened_ms=int(self.keys.clock() * 1000),
            opener_record=self.own_record() or b"",
            suite=self.cipher,
        )
