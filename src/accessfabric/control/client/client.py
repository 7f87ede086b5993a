"""The node side of the control API: enroll, heartbeat, directory, leases, and degraded mode.

:class:`ControlClient` signs every request with the node key
(:mod:`accessfabric.control.client.requestsig`), verifies everything signed that comes back with
the pinned authority key, and caches it on disk (:class:`NodeCache`).  When the control
plane cannot be reached, :meth:`ControlClient.route_leases` answers from the cache while
the cached leases are valid, and says exactly why when nothing usable is left;
:func:`heartbeat_forever` keeps trying with exponential backoff and jitter, renewing route
leases that near expiry.  :meth:`ControlClient.status` is the snapshot to log and show.

This module must not import ``accessfabric.node`` (the node imports it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from accessfabric.control.client.facts import HeartbeatFacts
from accessfabric.control.client.heartbeat_mac import ControlMacKey, MacKeyError, node_session_key
from accessfabric.control.client.node_cache import NodeCache
from accessfabric.control.client.replica_set import ReplicaSet
from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.kernel.api_tls import AuthorityPin
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import NodeRecord, RouteLease, ServiceLease
from accessfabric.control.kernel.rejections import RejectReason, SignedObjectRejected
from accessfabric.control.kernel.route_book import RouteBook, RouteKey
from accessfabric.control.kernel.verify import (
    verify_access_policy,
    verify_node_record,
    verify_route_lease,
    verify_service_lease,
)
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

_log = logging.getLogger("accessfabric.control.client.client")

DEFAULT_TIMEOUT = 5.0
DEFAULT_INTERVAL = 10.0
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
RENEW_FRACTION = 1 / 3
KEEPALIVE_IDLE = 25.0
"""Seconds an idle connection to the control plane is kept for the next request: more
than the heartbeat interval (10 s), so heartbeats reuse one TLS connection, and less
than the server's idle close (``IDLE_TIMEOUT``, 30 s), so a request never goes out on
a connection the server is closing (seen as ``ServerDisconnectedError`` / resets,
issue 17, ADR 0037)."""
"""A route lease with less than this share of its lifetime left is renewed."""


class ControlError(Exception):
    """Base of the client's errors."""


class ControlUnavailable(ControlError):
    """The control plane could not be reached or failed (network error, timeout, 5xx)."""


class ControlRefused(ControlError):
    """The control plane answered with a 4xx: ``status``, ``code`` and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"{code}: {message}")


class NoUsableLease(ControlError):
    """No valid route lease for the request: the message says why (control plane and cache)."""


class NotEnrolled(ControlError):
    """The node has no node record yet: enroll first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlStatus:
    """What a node knows about its link to the control plane, for logs and status pages."""

    reachable: bool | None
    """``None`` before the first attempt."""
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int
    next_attempt_at: float | None
    cache_age_s: float | None
    """Seconds since the control plane last answered (what the cache reflects)."""
    record_revision: int | None
    record_expires_at: float | None
    route_lease_expiries: dict[str, float] = field(default_factory=dict)
    """``service/class`` -> expiry (Unix seconds) of the longest-lived cached route lease."""
    service_lease_expiries: dict[str, float] = field(default_factory=dict)
    replicas: list[dict[str, object]] = field(default_factory=list)
    """Each control replica: url, state (ok / failed / not tried), current, last error."""

    def describe(self, now: float | None = None) -> str:
        """One line an operator can read."""
        when = time.time() if now is None else now
        state = {None: "not tried yet", True: "reachable", False: "UNREACHABLE"}[self.reachable]
        parts = [f"control plane {state}"]
        if len(self.replicas) > 1:
            parts.append(_describe_replicas(self.replicas))
        if self.last_error and not self.reachable:
            parts.append(f"last error: {self.last_error}")
        if self.cache_age_s is not None:
            parts.append(f"cache age {self.cache_age_s:.0f} s")
        if self.next_attempt_at is not None and not self.reachable:
            parts.append(f"retry in {max(0.0, self.next_attempt_at - when):.1f} s")
        for name, expires in sorted(self.route_lease_expiries.items()):
            left = expires - when
            parts.append(f"route {name} {'expired' if left <= 0 else f'valid {left:.0f} s'}")
        return "; ".join(parts)


def _describe_replicas(replicas: list[dict[str, object]]) -> str:
    answering = [str(r["url"]) for r in replicas if r.get("current") and r["state"] == "ok"]
    failed = [str(r["url"]) for r in replicas if r["state"] == "failed"]
    text = f"via {answering[0]}" if answering else "no replica answering"
    return text + (f" (failed: {', '.join(failed)})" if failed else "")


def _b64decode(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


class ControlClient:
    """One node's client of the control API (asyncio, aiohttp)."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        key: NodeKey,
        authority_public_key: bytes,
        cache_dir: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        routes: RouteBook | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.replicas = ReplicaSet(urls, clock=clock)
        """Every control replica; requests stick to one and fail over (``replica_set.py``)."""
        self.key = key
        self.authority_public_key = authority_public_key
        self.cache = NodeCache(cache_dir)
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._signer = RequestSigner(key, clock=clock)
        self._control_mac_key: ControlMacKey | None = None
        self._mac_key: tuple[int, bytes] | None = None  # (record revision, session key)
        self._mac_refused_revision: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self.routes = routes if routes is not None else RouteBook()
        """The node's one book of verified route leases (shared with route execution; its
        fences with the lease check): fetched leases go in, cached ones come out of it."""
        self.fences = self.routes.fences
        self.routes.on_replaced.append(self._cache_replaced_route)
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failures = 0
        self.next_attempt_at: float | None = None
        self.wanted: set[tuple[str, TrafficClass]] = set()
        """Route leases this node uses; :func:`heartbeat_forever` renews them."""

    # ---- plumbing ---------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    @property
    def reachable(self) -> bool | None:
        """Whether the last request got an answer (``None`` before the first)."""
        return self._reachable

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.cache.flush()  # sync.json is held in memory between writes
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # https: the server's certificate must be issued by the pinned authority key
            # (ADR 0017); checked before a request leaves.
            pin = aiohttp.TCPConnector(
                ssl=AuthorityPin(self.authority_public_key), keepalive_timeout=KEEPALIVE_IDLE
            )
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=pin)
        return self._session

    def kept_alive_sockets(self) -> list[Any]:
        """The sockets of this client's idle kept-alive connections (for a load tool that
        reads their ``TCP_INFO``, sim/fleet_worker.py).  aiohttp does not publish its pool:
        read where it keeps it, and an empty list if that ever moves."""
        connector = None if self._session is None else self._session.connector
        pool = getattr(connector, "_conns", None) or {}
        out = []
        for held in pool.values():
            for protocol, _ in held:
                transport = getattr(protocol, "transport", None)
                sock = None if transport is None else transport.get_extra_info("socket")
                if sock is not None:
                    out.append(sock)
        return out

    def _succeeded(self) -> None:
        now = self._clock()
        self._reachable, self._failures = True, 0
        self.cache.write({"last_success_at": now}, "sync.json")

    def _failed(self, message: str) -> None:
        self._reachable = False
        self._failures += 1
        self._last_error, self._last_error_at = message, self._clock()

    @property
    def base_url(self) -> str:
        """The replica the next request goes to first (the last one that answered)."""
        return self.replicas.current.url

    async def request(
        self, method: str, path: str, document: Any = None, *, mac: tuple[int, bytes] | None = None
    ) -> dict[str, Any]:
        """:meth:`request_replica` on the sticky replica, then on each other one while the
        ones tried are unreachable or answer 5xx; :class:`ControlUnavailable` when none
        answers."""
        errors: list[str] = []
        for replica in self.replicas.order():
            self.replicas.current = replica
            try:
                reply = await self.request_replica(method, path, document, mac=mac)
            except ControlUnavailable as exc:
                self.replicas.failed(replica, str(exc))
                errors.append(str(exc))
                continue
            except ControlRefused:
                self.replicas.succeeded(replica)
                raise
            self.replicas.succeeded(replica)
            return reply
        message = "; ".join(errors) if len(errors) > 1 else errors[0]
        self._last_error = message
        raise ControlUnavailable(message)

    async def request_replica(
        self, method: str, path: str, document: Any = None, *, mac: tuple[int, bytes] | None = None
    ) -> dict[str, Any]:
        """A signed request (``mac``: ``AF-MAC`` with this (revision, key) instead of an
        Ed25519 signature); the JSON reply.  :class:`ControlUnavailable` or
        :class:`ControlRefused` on failure (both recorded in :meth:`status`)."""
        body = b"" if document is None else json.dumps(document).encode()
        if mac is None:
            headers = self._signer.headers(method, path, body)
        else:
            headers = self._signer.mac_headers(method, path, body, mac[1], mac[0])
        if document is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method, self.base_url + path, data=body or None, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._failed(f"cannot reach {self.base_url}: {message}")
            raise ControlUnavailable(self._last_error or message) from None
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            reply = {}
        if status >= 500 or not isinstance(reply, dict):
            error = reply.get("error") if isinstance(reply, dict) else None
            why = f": {error.get('message')}" if isinstance(error, dict) else ""
            self._failed(f"{self.base_url} answered HTTP {status}{why}")
            raise ControlUnavailable(self._last_error or "")
        if status >= 400:
            error = reply.get("error", {}) if isinstance(reply.get("error"), dict) else {}
            self._succeeded()  # it answered: reachable, but it said no
            raise ControlRefused(
                status, str(error.get("code", "error")), str(error.get("message", ""))
            )
        self._succeeded()
        return reply

    # ---- enrollment and the node record -----------------------------------------------

    def _accept_record(self, document: dict[str, Any]) -> NodeRecord:
        blob = _b64decode(document.get("record"))
        record = verify_node_record(blob, self.authority_public_key, self._clock())
        if record.node_id != self.key.node_id:
            raise ControlError(f"the control plane sent the record of {record.node_id}")
        self.cache.write({"record": document["record"], "revision": record.revision}, "record.json")
        return record

    async def enroll(self, token: str) -> NodeRecord:
        """Enroll with ``token``; the verified node record (cached)."""
        reply = await self.request(
            "POST",
            "/v1/enroll",
            {
                "token": token,
                "public_key": base64.b64encode(self.key.public_key_bytes).decode(),
                "sealing_public_key": base64.b64encode(self.key.sealing_public_key_bytes).decode(),
            },
        )
        record = self._accept_record(reply["node_record"])
        if isinstance(reply.get("policy"), dict):
            self.cache.write(reply["policy"], "policy.json")
        self._take_mac_key(reply.get("mac_key"))
        return record

    def _take_mac_key(self, document: object) -> None:
        """Keep the control plane's heartbeat-MAC key if the pinned authority signed it."""
        if document is None:
            return
        try:
            control = ControlMacKey.from_json(document, self.authority_public_key)
        except MacKeyError:
            return  # stay on Ed25519
        if control != self._control_mac_key:
            self._control_mac_key, self._mac_key = control, None

    def _heartbeat_mac(self, record: NodeRecord | None) -> tuple[int, bytes] | None:
        """(revision, session key) for ``AF-MAC`` on heartbeats, or ``None`` for Ed25519."""
        control = self._control_mac_key
        if (
            control is None
            or record is None
            or record.sealing_public_key != self.key.sealing_public_key_bytes
            or record.revision == self._mac_refused_revision
        ):
            return None
        if self._mac_key is None or self._mac_key[0] != record.revision:
            key = node_session_key(
                self.key.sealing_private_key(), self.key.node_id, record.revision, control
            )
            self._mac_key = (record.revision, key)
        return self._mac_key

    def record_blob(self) -> bytes | None:
        """The cached signed node record as sent on the wire, if it still verifies."""
        document = self.cache.read("record.json")
        if document is None or self.record() is None:
            return None
        return _b64decode(document.get("record"))

    def record(self) -> NodeRecord | None:
        """The cached node record if it still verifies (signature and expiry)."""
        document = self.cache.read("record.json")
        if document is None:
            return None
        try:
            return verify_node_record(
                _b64decode(document.get("record")), self.authority_public_key, self._clock()
            )
        except (SignedObjectRejected, ValueError):
            return None

    # ---- heartbeats -------------------------------------------------------------------

    def policy(self) -> dict[str, Any]:
        return self.cache.read("policy.json") or {}

    def heartbeat_interval(self) -> float:
        value = self.policy().get("heartbeat_interval_s", DEFAULT_INTERVAL)
        return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_INTERVAL

    async def heartbeat(self, facts: HeartbeatFacts) -> dict[str, Any]:
        """Send one heartbeat; take a newer node record and the policy from the reply."""
        record = self.record()
        document = facts.to_json()
        versions = document["cache_versions"]
        versions["node_record"] = record.revision if record else 0
        versions["policy"] = int(self.policy().get("version", 0) or 0)
        directory = self.cache.read("directory.json") or {}
        versions["directory"] = int(directory.get("version", 0) or 0)
        versions["access_policy"] = self._access_policy_version()  # the body only on change
        mac = self._heartbeat_mac(record)
        reply: dict[str, Any] | None = None
        if mac is not None:
            try:
                reply = await self.request("POST", "/v1/heartbeat", document, mac=mac)
            except ControlRefused as exc:
                if exc.status != 401:
                    raise
                # stale key (the record moved on), or the MAC path is refused: fall back to
                # Ed25519 now; a bad MAC keeps this revision on Ed25519
                if exc.code != "stale_mac_key":
                    self._mac_refused_revision = mac[0]
                self._mac_key = None
        if reply is None:
            reply = await self.request("POST", "/v1/heartbeat", document)
        self._take_mac_key(reply.get("mac_key"))
        node_record = reply.get("node_record")
        if isinstance(node_record, dict) and "record" in node_record:
            self._accept_record(node_record)
        if isinstance(reply.get("policy"), dict):
            self.cache.write(reply["policy"], "policy.json")
        self._take_access_policy(reply.get("access_policy"))
        return reply

    # ---- access policy (the grants this node enforces as a service host) ---------------

    def _take_access_policy(self, text: object) -> None:
        """Cache the access policy of a heartbeat reply if it verifies and is not older."""
        if not isinstance(text, str):
            return
        held = self.cached_access_policy()
        try:
            policy = verify_access_policy(
                _b64decode(text), self.authority_public_key, self._clock(),
                host=self.key.node_id, min_revision=0 if held is None else held[1],
            )  # fmt: skip
        except (SignedObjectRejected, ValueError) as exc:
            _log.warning("access policy refused: %s", exc)
            return
        self.cache.write(
            {"policy": text, "revision": policy.revision, "version": policy.issued_ms},
            "access.json",
        )

    def _access_policy_version(self) -> int:
        """The version (``issued_ms``) of the access policy held, 0 when none verifies now."""
        held = self.cached_access_policy()
        if held is None:
            return 0
        document = self.cache.read("access.json") or {}
        version = document.get("version", 0)
        return version if isinstance(version, int) and not isinstance(version, bool) else 0

    def cached_access_policy(self) -> tuple[bytes, int] | None:
        """(blob, revision) of the cached access policy if it still verifies now."""
        document = self.cache.read("access.json")
        if document is None:
            return None
        try:
            blob = _b64decode(document.get("policy"))
            policy = verify_access_policy(
                blob, self.authority_public_key, self._clock(), host=self.key.node_id
            )
        except (SignedObjectRejected, ValueError):
            return None
        return blob, policy.revision

    # ---- directory --------------------------------------------------------------------

    async def directory(self) -> dict[str, Any]:
        """The peer directory; entries whose record does not verify are dropped.

        With a cached directory the request carries its ``cursor``, and the reply is a
        delta when the control plane's change log still covers it: the changed entries
        replace the held ones, ``removed`` (or, ``mobile``, ``ids``: the members) drop the
        others.  A delta naming a member this node does not hold is followed by a whole
        fetch (a ``mobile`` view's cut moved), and so is a delta with an entry whose record
        does not verify: dropping it would leave the older held entry in its place."""
        cached = self.cache.read("directory.json")
        cursor = cached.get("cursor") if cached else None
        if cached and isinstance(cursor, str) and cursor:
            reply = await self.request("GET", "/v1/directory?since=" + quote(cursor, safe=""))
            whole = self._verify_entries(reply)
            merged = _merge_delta(cached, reply) if whole else None
            if merged is not None:
                self.cache.write(merged, "directory.json")
                return merged
            if reply.get("delta") is not True:  # the control plane sent it whole
                self.cache.write(reply, "directory.json")
                return reply
        reply = await self.request("GET", "/v1/directory")
        self._verify_entries(reply)
        self.cache.write(reply, "directory.json")
        return reply

    def _verify_entries(self, reply: dict[str, Any]) -> bool:
        """Drop the entries of ``reply`` whose record does not verify; False if any did."""
        kept = []
        now = self._clock()
        entries = reply.get("entries", [])
        for entry in entries:
            try:
                verify_node_record(_b64decode(entry.get("record")), self.authority_public_key, now)
            except (SignedObjectRejected, ValueError):
                _log.warning("directory entry %s does not verify; dropped", entry.get("node_id"))
                continue
            kept.append(entry)
        reply["entries"] = kept
        return len(kept) == len(entries)

    def cached_directory(self) -> dict[str, Any] | None:
        return self.cache.read("directory.json")

    # ---- route leases -----------------------------------------------------------------

    def _verified_routes(
        self,
        document: dict[str, Any],
        service: str,
        traffic_class: TrafficClass,
        now: float,
        *,
        cached: bool = False,
    ) -> list[LeasedRoute]:
        """The leases of ``document`` that verify now; refusals are logged, except the
        expiry of ``cached`` ones (expected: status and the errors report it)."""
        usable = []
        for route in document.get("routes", []):
            try:
                blob = _b64decode(route.get("lease"))
                lease = verify_route_lease(
                    blob,
                    self.authority_public_key,
                    now,
                    hop=self.key.node_id,
                    service=service,
                    traffic_class=traffic_class,
                )
                self.fences.check(lease)
            except (SignedObjectRejected, ValueError) as exc:
                expired = getattr(exc, "reason", None) == RejectReason.EXPIRED
                if not (cached and expired):
                    _log.info("route lease for %s refused: %s", service, exc)
                continue
            usable.append(
                LeasedRoute(
                    lease=lease,
                    blob=blob,
                    rank=str(route.get("rank", "")),
                    destination=self._destination(route, lease, now),
                )
            )
        return usable

    def _destination(
        self, route: dict[str, Any], lease: RouteLease, now: float
    ) -> NodeRecord | None:
        """The route's destination record if it verifies and names the lease's last hop."""
        text = route.get("destination_record")
        if text is None or not lease.hops:
            return None
        try:
            record = verify_node_record(_b64decode(text), self.authority_public_key, now)
        except (SignedObjectRejected, ValueError) as exc:
            _log.info("destination record of route %s refused: %s", lease.route_id, exc)
            return None
        if record.node_id != lease.hops[-1]:
            _log.info("route %s came with the record of another node", lease.route_id)
            return None
        return record

    async def fetch_route_leases(
        self, service: str, traffic_class: TrafficClass = TrafficClass.INTERACTIVE
    ) -> list[LeasedRoute]:
        """New route leases from the control plane (verified, fenced, cached)."""
        name = traffic_class.name.lower()
        reply = await self.request(
            "POST", "/v1/leases/route", {"service": service, "traffic_class": name}
        )
        now = self._clock()
        usable = self._verified_routes(reply, service, traffic_class, now)
        for route in usable:
            self.fences.admit(route.lease)
        self.routes.put(service, traffic_class, usable)
        self.wanted.add((service, traffic_class))
        # Cache only what was believed: a reply overtaken by a ROUTE_UPDATE holds a fenced
        # epoch, which must not replace the newer one _cache_replaced_route wrote.
        offered = reply.get("routes", [])
        kept = {base64.b64encode(route.blob).decode() for route in usable}
        believed = [route for route in offered if route.get("lease") in kept]
        if believed or not offered:
            self.cache.write(
                {
                    "service": service, "traffic_class": name, "fetched_at": now,
                    **reply, "routes": believed,
                },
                *NodeCache.route_file(service, name),
            )  # fmt: skip
        return usable

    def _cache_replaced_route(self, key: RouteKey, old: LeasedRoute, new: LeasedRoute) -> None:
        """A ROUTE_UPDATE replaced ``old`` in the book: replace it in the disk cache too, so
        a node restarted from the cache while the control plane is down uses the newer
        epoch (its fences start empty and would admit the older one)."""
        service, traffic_class = key
        parts = NodeCache.route_file(service, traffic_class.name.lower())
        document = self.cache.read(*parts)
        if document is None:
            return
        old_text = base64.b64encode(old.blob).decode()
        lease = new.lease
        fields = {
            "lease": base64.b64encode(new.blob).decode(),
            "lease_id": lease.lease_id.hex(),
            "epoch": lease.epoch,
            "fencing_token": lease.fencing_token,
            "hops": list(lease.hops),
            "issued_ms": lease.issued_ms,
            "expires_ms": lease.expires_ms,
        }
        routes = document.get("routes", [])
        if not any(route.get("lease") == old_text for route in routes):
            return
        rewritten = [
            {**route, **fields} if route.get("lease") == old_text else route for route in routes
        ]
        try:
            self.cache.write({**document, "routes": rewritten}, *parts)
        except OSError as exc:
            _log.warning("cannot rewrite the cached lease of route %s: %s", lease.route_id, exc)

    def cached_route_leases(
        self, service: str, traffic_class: TrafficClass = TrafficClass.INTERACTIVE
    ) -> list[LeasedRoute]:
        """The route book's leases still valid now and not fenced, primary first.  The
        first time after a start the book is filled from the disk cache (verified)."""
        if self.routes.held(service, traffic_class) is None:
            name = traffic_class.name.lower()
            document = self.cache.read(*NodeCache.route_file(service, name))
            if document is None:
                return []
            now = self._clock()
            loaded = self._verified_routes(document, service, traffic_class, now, cached=True)
            self.routes.put(service, traffic_class, loaded)
        return self.routes.usable(service, traffic_class, self._clock())

    async def route_leases(
        self, service: str, traffic_class: TrafficClass = TrafficClass.INTERACTIVE
    ) -> list[LeasedRoute]:
        """Leases for a new stream: fresh when the control plane answers, else cached.

        Raises :class:`NoUsableLease` saying why when neither gives a valid lease, and
        :class:`ControlRefused` when the control plane refuses (no route, unknown service).
        """
        try:
            return await self.fetch_route_leases(service, traffic_class)
        except ControlUnavailable as exc:
            cached = self.cached_route_leases(service, traffic_class)
            if cached:
                return cached
            raise NoUsableLease(self._why_no_lease(service, traffic_class, str(exc))) from None

    def _why_no_lease(self, service: str, traffic_class: TrafficClass, error: str) -> str:
        name = traffic_class.name.lower()
        document = self.cache.read(*NodeCache.route_file(service, name))
        if document is None:
            cached = "no route lease for it was ever cached"
        else:
            expiries = [r.get("expires_ms", 0) for r in document.get("routes", [])]
            latest = max((e for e in expiries if isinstance(e, int)), default=0) / 1000
            cached = f"the cached route leases expired {self._clock() - latest:.0f} s ago"
        sync = self.cache.read("sync.json") or {}
        last = sync.get("last_success_at")
        since = (
            f"no answer for {self._clock() - last:.0f} s; "
            if isinstance(last, int | float) and not isinstance(last, bool)
            else ""
        )
        return (
            f"no usable route lease for service {service!r} ({name}): the control plane is "
            f"unreachable ({since}{error}) and {cached}"
        )

    # ---- services ---------------------------------------------------------------------

    async def register_service(self, service: str, mode: str = "active-active") -> dict[str, Any]:
        return await self.request("POST", f"/v1/services/{service}/replicas", {"mode": mode})

    async def deregister_service(self, service: str) -> dict[str, Any]:
        return await self.request("DELETE", f"/v1/services/{service}/replicas")

    async def telemetry(self) -> dict[str, Any]:
        """``GET /v1/telemetry`` (observer nodes): the partition's heartbeat counters."""
        return await self.request("GET", "/v1/telemetry")

    async def service_leases(self, service: str) -> list[ServiceLease]:
        """Verified service leases of the serving replicas (cached)."""
        reply = await self.request("GET", f"/v1/services/{service}/leases")
        self.cache.write(reply, *NodeCache.service_file(service))
        return self._verified_services(reply, service)

    def cached_service_leases(self, service: str) -> list[ServiceLease]:
        document = self.cache.read(*NodeCache.service_file(service))
        return [] if document is None else self._verified_services(document, service)

    def _verified_services(self, document: dict[str, Any], service: str) -> list[ServiceLease]:
        out = []
        for text in document.get("leases", []):
            try:
                out.append(
                    verify_service_lease(
                        _b64decode(text), self.authority_public_key, self._clock(), service=service
                    )
                )
            except (SignedObjectRejected, ValueError):
                continue
        return out

    # ---- renewal and status -----------------------------------------------------------

    async def renew_due(self) -> int:
        """Renew wanted route leases with less than a third of their life left; how many."""
        renewed = 0
        now = self._clock()
        for service, traffic_class in sorted(self.wanted):
            routes = self.cached_route_leases(service, traffic_class)
            due = not routes
            for route in routes:
                life = route.lease.expires_ms - route.lease.issued_ms
                if route.lease.expires_ms - now * 1000 < life * RENEW_FRACTION:
                    due = True
            if due:
                try:
                    await self.fetch_route_leases(service, traffic_class)
                    renewed += 1
                except ControlRefused as exc:
                    _log.warning("route lease renewal for %s refused: %s", service, exc)
        return renewed

    def status(self) -> ControlStatus:
        now = self._clock()
        sync = self.cache.read("sync.json") or {}
        last = sync.get("last_success_at")
        last_success = float(last) if isinstance(last, int | float) else None
        record = self.record()
        routes: dict[str, float] = {}
        for document in self.cache.route_documents():
            expiries = [r.get("expires_ms", 0) for r in document.get("routes", [])]
            best = max((e for e in expiries if isinstance(e, int)), default=0)
            routes[f"{document.get('service')}/{document.get('traffic_class')}"] = best / 1000
        services: dict[str, float] = {}
        for document in self.cache.service_documents():
            name = str(document.get("service"))
            leases = self._verified_services(document, name)
            if leases:
                services[name] = max(lease.expires_ms for lease in leases) / 1000
        return ControlStatus(
            reachable=self._reachable,
            last_success_at=last_success,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            consecutive_failures=self._failures,
            next_attempt_at=self.next_attempt_at,
            cache_age_s=None if last_success is None else max(0.0, now - last_success),
            record_revision=record.revision if record else None,
            record_expires_at=record.expires_ms / 1000 if record else None,
            route_lease_expiries=routes,
            service_lease_expiries=services,
            replicas=self.replicas.to_json(),
        )


def backoff_delay(failures: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: uniform in [half, full] of ``min(cap, base * 2**n)``."""
    ceiling = min(cap, base * (2 ** min(failures, 30)))
    return rng.uniform(ceiling / 2, ceiling)


async def heartbeat_forever(
    client: ControlClient,
    facts: Callable[[], HeartbeatFacts],
    *,
    stop: asyncio.Event | None = None,
    backoff_base: float = BACKOFF_BASE,
    backoff_max: float = BACKOFF_MAX,
    rng: random.Random | None = None,
) -> None:
    """Heartbeat every policy interval (±10 % jitter) until ``stop``; renew leases after each.

    Failures back off exponentially with jitter up to ``backoff_max``; each one is logged
    once with the client's status line, and success after failures is logged too.
    """
    stop = stop or asyncio.Event()
    rng = rng or random.Random()
    failures = 0
    while not stop.is_set():
        try:
            await client.heartbeat(facts())
            await client.renew_due()
            if failures:
                _log.info("control plane reachable again after %d failed attempts", failures)
            failures = 0
            delay = client.heartbeat_interval() * rng.uniform(0.9, 1.1)
        except ControlRefused as exc:
            _log.warning("heartbeat refused: %s", exc)
            failures += 1
            delay = backoff_delay(failures, rng, base=backoff_base, cap=backoff_max)
        except ControlUnavailable:
            failures += 1
            delay = backoff_delay(failures, rng, base=backoff_base, cap=backoff_max)
            client.next_attempt_at = client.now() + delay
            _log.warning("%s", client.status().describe())
        else:
            client.next_attempt_at = None
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for on 3.11 can
            async with asyncio.timeout(delay):  # lose a cancel that lands as stop is set
                await stop.wait()


def _merge_delta(held: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any] | None:
    """``held`` with a delta ``reply`` applied; ``None`` when the reply is not a delta or
    names a member ``held`` does not have (fetch it whole then)."""
    if reply.get("delta") is not True:
        return None
    entries = {e.get("node_id"): e for e in held.get("entries", []) if isinstance(e, dict)}
    for entry in reply.get("entries", []):
        entries[entry.get("node_id")] = entry
    for node_id in reply.get("removed", []) or []:
        entries.pop(node_id, None)
    ids = reply.get("ids")
    if isinstance(ids, list):
        if any(node_id not in entries for node_id in ids):
            return None
        entries = {node_id: entries[node_id] for node_id in ids}
    merged = dict(held)
    merged.update(
        version=reply.get("version"),
        cursor=reply.get("cursor"),
        scope=reply.get("scope", held.get("scope")),
        placement=reply.get("placement", []),
        entries=[entries[k] for k in sorted(entries, key=str)],
        delta=False,
    )
    return merged
