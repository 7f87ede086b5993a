"""``EtcdStore``: the :class:`~accessfabric.control.server.store.base.Store` on an etcd v3 cluster.

Every call is one etcd request (ADR 0006 has the table; ADR 0018 says why grpcio's
synchronous channel over the protobuf stubs that ``aetcd`` ships):

* ``put_if``/``delete_if`` are one ``Txn(If(ModRevision(key) == n)).Then(…).Else(Range)``;
  a key's ``mod_revision`` is the fencing token, the cluster's revision the store's.
* ``grant_lease``/``keepalive``/``time_to_live``/``revoke`` are etcd leases (whole seconds,
  rounded up); etcd deletes a lease's keys in one revision when it expires.
* ``changes(since, prefix)`` is a watch from ``since + 1`` read until a progress
  notification says the watcher has caught up; a compacted start raises
  :class:`CompactedError`.  :meth:`EtcdStore.watch` is the same watch as an async stream
  (``grpc.aio``), so replicas learn each other's writes without polling.
* Keys live under ``namespace`` (default ``/accessfabric``), so one etcd cluster can hold
  other data; ranges and watches never leave it.  The revision is the cluster's.

Reads are linearizable (etcd's default), so a member that lost quorum answers nothing
rather than something stale; every request has a deadline and a request that cannot be
served within it raises :class:`StoreUnavailableError`.  Several endpoints are tried in
turn; the store sticks to the one that last answered.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import grpc
import grpc.aio

from accessfabric.control.server.store.base import (
    Change,
    ChangeKind,
    CompactedError,
    Entry,
    FutureRevisionError,
    LeaseNotFoundError,
    RangeResult,
    Store,
    StoreUnavailableError,
    TxnResult,
    prefix_range_end,
    validate_key,
    validate_value,
)
from accessfabric.control.server.store.etcd_grpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

DEFAULT_NAMESPACE = "/accessfabric"
DEFAULT_TIMEOUT = 2.0
"""Seconds a request may take before the store calls etcd unavailable (a leader election
on a healthy cluster takes about one election timeout, 1 s by default)."""
WATCH_PROGRESS_AFTER = 1.0
"""Seconds a watch stream may be silent before it asks etcd for its progress; silent for
as long again after asking, it is a broken stream (see :meth:`EtcdStore.watch`)."""
MAX_TXN_OPS = 128
"""etcd's default ``--max-txn-ops``."""
MAX_TXN_BYTES = 1024 * 1024
"""Stay below etcd's default ``--max-request-bytes`` (1.5 MiB) per transaction."""

_RETRY_CODES = {grpc.StatusCode.UNAVAILABLE}
_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
_LEASE_NOT_FOUND = "requested lease not found"
_COMPACTED = "required revision has been compacted"
_FUTURE = "required revision is a future revision"


@dataclass(frozen=True, slots=True)
class EtcdTarget:
    """What an ``etcd://`` URL names: endpoints, key namespace, TLS files (or none)."""

    endpoints: list[str]
    namespace: str = DEFAULT_NAMESPACE
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS to etcd when ``ca`` is given (client certificate when ``cert``/``key`` are)."""
        if self.ca is None:
            return None
        try:
            ca = Path(self.ca).read_bytes()
            cert = Path(self.cert).read_bytes() if self.cert else None
            key = Path(self.key).read_bytes() if self.key else None
        except OSError as error:
            raise ValueError(f"cannot read an etcd TLS file: {error}") from None
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


_TLS_PARAMETERS = ("ca", "cert", "key")


def parse_store_url(url: str) -> tuple[list[str], str]:
    """``etcd://h1:2379,h2:2379[/namespace]`` -> (endpoints, namespace)."""
    target = parse_etcd_url(url)
    return target.endpoints, target.namespace


def parse_etcd_url(url: str) -> EtcdTarget:
    """``etcd://h1:2379,h2:2379[/namespace][?ca=FILE&cert=FILE&key=FILE]``.

    ``ca`` turns on TLS to etcd (verify the members against that CA); ``cert`` and ``key``
    add a client certificate (etcd's ``--client-cert-auth``).  Raises :class:`ValueError`
    naming the mistake.
    """
    if not url.startswith("etcd://"):
        raise ValueError(f"an etcd store URL starts with etcd:// (got {url!r})")
    rest, _, query = url[len("etcd://") :].partition("?")
    hosts, slash, path = rest.partition("/")
    namespace = "/" + path.strip("/") if slash and path.strip("/") else DEFAULT_NAMESPACE
    endpoints = [host.strip() for host in hosts.split(",") if host.strip()]
    if not endpoints:
        raise ValueError(f"no etcd endpoint in {url!r} (expected etcd://host:port,…)")
    for endpoint in endpoints:
        host, colon, port = endpoint.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    files: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in _TLS_PARAMETERS or len(values) != 1 or not values[0]:
            raise ValueError(f"etcd URL parameter {name!r}: use ca=FILE, cert=FILE, key=FILE")
        files[name] = values[0]
    if ("cert" in files) != ("key" in files):
        raise ValueError("etcd URL: give cert and key together")
    if files and "ca" not in files:
        raise ValueError("etcd URL: TLS needs ca=FILE (the CA of the etcd members)")
    return EtcdTarget(endpoints, namespace, files.get("ca"), files.get("cert"), files.get("key"))


class EtcdStore(Store):
    """A :class:`Store` on the etcd cluster at ``endpoints`` (``host:port`` each)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.namespace = namespace.rstrip("/")
        self._ns = self.namespace.encode("utf-8")
        self.timeout = timeout
        self._credentials = credentials
        self._channels = [self._open(endpoint) for endpoint in self.endpoints]
        self._current = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> EtcdStore:
        target = parse_etcd_url(url)
        return cls(
            target.endpoints,
            namespace=target.namespace,
            timeout=timeout,
            credentials=target.credentials(),
        )

    def _open(self, endpoint: str) -> grpc.Channel:
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
        if self._credentials is not None:
            return grpc.secure_channel(endpoint, self._credentials, options=options)
        return grpc.insecure_channel(endpoint, options=options)

    @property
    def current_endpoint(self) -> str:
        """The endpoint the store sends its next request to (the last one that answered)."""
        return self.endpoints[self._current]

    # -- plumbing -----------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return self._ns + validate_key(key)

    def _strip(self, raw: bytes) -> str:
        return raw[len(self._ns) :].decode("utf-8")

    def _prefix_bounds(self, prefix: str) -> tuple[bytes, bytes]:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        low = self._ns + prefix.encode("utf-8")
        high = prefix_range_end(low)
        return low, b"\0" if high is None else high

    def _call(self, stub_name: str, method: str, request: Any) -> Any:
        """One unary request, trying each endpoint once when one is unreachable.

        Only ``UNAVAILABLE`` (the connection failed or broke) moves on to the next endpoint;
        a deadline is not retried.  A write retried after a success it did not see is
        harmless for a CAS: the retry fails and reports the entry as it is (never two
        successes), so a single-use token stays single-use.
        """
        if self._closed:
            raise StoreUnavailableError("the etcd store is closed")
        start = self._current
        error: grpc.RpcError | None = None
        for step in range(len(self._channels)):
            index = (start + step) % len(self._channels)
            stub = getattr(rpc_pb2_grpc, stub_name)(self._channels[index])
            try:
                response = getattr(stub, method)(request, timeout=self.timeout)
            except grpc.RpcError as caught:
                error = caught
                code = caught.code()
                if code in _RETRY_CODES:
                    continue
                raise self._translate(caught) from caught
            self._current = index
            return response
        assert error is not None
        raise self._translate(error) from error

    def _translate(self, error: grpc.RpcError) -> Exception:
        code = error.code()
        details = error.details() or ""
        if _LEASE_NOT_FOUND in details:
            return LeaseNotFoundError(0)
        if _FUTURE in details:
            return FutureRevisionError(details)
        if code in _UNAVAILABLE_CODES:
            return StoreUnavailableError(
                f"etcd at {', '.join(self.endpoints)} did not answer "
                f"({code.name.lower()}: {details or 'no detail'})"
            )
        return StoreUnavailableError(f"etcd refused the request ({code.name}: {details})")

    def _entry(self, kv: Any) -> Entry:
        return Entry(
            key=self._strip(kv.key),
            value=bytes(kv.value),
            create_revision=int(kv.create_revision),
            mod_revision=int(kv.mod_revision),
            version=int(kv.version),
            lease_id=int(kv.lease) or None,
        )

    # -- keys ---------------------------------------------------------------------------

    def revision(self) -> int:
        low, high = self._prefix_bounds("")
        response = self._call(
            "KVStub", "Range", rpc_pb2.RangeRequest(key=low, range_end=high, count_only=True)
        )
        return int(response.header.revision)

    def get(self, key: str) -> Entry | None:
        response = self._call("KVStub", "Range", rpc_pb2.RangeRequest(key=self._key(key)))
        return self._entry(response.kvs[0]) if response.kvs else None

    def range(self, prefix: str) -> RangeResult:
        low, high = self._prefix_bounds(prefix)
        response = self._call("KVStub", "Range", rpc_pb2.RangeRequest(key=low, range_end=high))
        return RangeResult(
            entries=tuple(self._entry(kv) for kv in response.kvs),
            revision=int(response.header.revision),
        )

    def changed_between(self, prefix: str, after: int, until: int) -> bool:
        """Whether a key under ``prefix`` was written (put) at a revision in ``(after,
        until]``: a linearizable read, the keys only, at most one returned.  etcd reads every
        key under ``prefix`` to filter them, so this is for checks, not for every request."""
        low, high = self._prefix_bounds(prefix)
        request = rpc_pb2.RangeRequest(
            key=low,
            range_end=high,
            keys_only=True,
            limit=1,
            min_mod_revision=after + 1,
            max_mod_revision=until,
        )
        return bool(self._call("KVStub", "Range", request).kvs)

    def _lease_arg(self, lease: int | None) -> int:
        if lease is None:
            return 0
        if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
            raise ValueError(f"lease must be a positive lease id, got {lease!r}")
        return lease

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        raw = self._key(key)
        validate_value(value)
        lease_id = self._lease_arg(lease)
        try:
            response = self._call(
                "KVStub", "Put", rpc_pb2.PutRequest(key=raw, value=value, lease=lease_id)
            )
        except LeaseNotFoundError:
            raise LeaseNotFoundError(lease_id) from None
        return int(response.header.revision)

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        """Several puts in as few transactions as etcd's limits allow (each one revision)."""
        requests = [
            rpc_pb2.RequestOp(
                request_put=rpc_pb2.PutRequest(key=self._key(key), value=validate_value(value))
            )
            for key, value in items
        ]
        if not requests:
            return self.revision()
        revision = 0
        batch: list[Any] = []
        size = 0
        for (key, value), request in zip(items, requests, strict=True):
            weight = len(key) + len(value) + 64
            if batch and (len(batch) == MAX_TXN_OPS or size + weight > MAX_TXN_BYTES):
                revision = self._txn_puts(batch)
                batch, size = [], 0
            batch.append(request)
            size += weight
        return self._txn_puts(batch) if batch else revision

    def _txn_puts(self, batch: list[Any]) -> int:
        response = self._call("KVStub", "Txn", rpc_pb2.TxnRequest(success=batch))
        return int(response.header.revision)

    def _compare_mod(self, raw: bytes, expected: int) -> Any:
        return rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL,
            target=rpc_pb2.Compare.MOD,
            key=raw,
            mod_revision=expected,
        )

    def _txn(self, raw: bytes, expected: int, then: Any) -> TxnResult:
        request = rpc_pb2.TxnRequest(
            compare=[self._compare_mod(raw, expected)],
            success=[then],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=raw))],
        )
        response = self._call("KVStub", "Txn", request)
        revision = int(response.header.revision)
        if response.succeeded:
            return TxnResult(succeeded=True, revision=revision)
        kvs = response.responses[0].response_range.kvs
        return TxnResult(
            succeeded=False, revision=revision, current=self._entry(kvs[0]) if kvs else None
        )

    def put_if(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int | None = None
    ) -> TxnResult:
        raw = self._key(key)
        validate_value(value)
        _check_expected(expected_mod_revision)
        lease_id = self._lease_arg(lease)
        then = rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(key=raw, value=value, lease=lease_id)
        )
        try:
            return self._txn(raw, expected_mod_revision, then)
        except LeaseNotFoundError:
            raise LeaseNotFoundError(lease_id) from None

    def delete(self, key: str) -> int | None:
        response = self._call(
            "KVStub", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=self._key(key))
        )
        return int(response.header.revision) if response.deleted else None

    def delete_if(self, key: str, expected_mod_revision: int) -> TxnResult:
        raw = self._key(key)
        _check_expected(expected_mod_revision)
        if expected_mod_revision == 0:  # "delete if absent" never deletes anything
            current = self.get(key)
            return TxnResult(succeeded=False, revision=self.revision(), current=current)
        then = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=raw))
        return self._txn(raw, expected_mod_revision, then)

    # -- leases -------------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError("lease ttl must be positive")
        response = self._call(
            "LeaseStub", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=math.ceil(ttl))
        )
        if response.error:
            raise StoreUnavailableError(f"etcd refused a lease: {response.error}")
        return int(response.ID)

    def keepalive(self, lease_id: int) -> float:
        """One ``LeaseKeepAlive`` round trip (a stream with one request), on the sticky
        endpoint, then on each other one while they are unreachable."""
        if self._closed:
            raise StoreUnavailableError("the etcd store is closed")
        start = self._current
        error: grpc.RpcError | None = None
        for step in range(len(self._channels)):
            index = (start + step) % len(self._channels)
            stub = rpc_pb2_grpc.LeaseStub(self._channels[index])
            try:
                responses = stub.LeaseKeepAlive(
                    iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=self.timeout
                )
                response = next(iter(responses))
            except grpc.RpcError as caught:
                error = caught
                if caught.code() in _RETRY_CODES:
                    continue
                raise self._translate(caught) from caught
            except StopIteration:
                raise StoreUnavailableError("etcd closed the keepalive stream") from None
            self._current = index
            if int(response.TTL) <= 0:
                raise LeaseNotFoundError(lease_id)
            return float(response.TTL)
        assert error is not None
        raise self._translate(error) from error

    def time_to_live(self, lease_id: int) -> float:
        response = self._call(
            "LeaseStub", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id)
        )
        if int(response.TTL) < 0:
            raise LeaseNotFoundError(lease_id)
        return float(response.TTL)

    def revoke(self, lease_id: int) -> int | None:
        info = self._call(
            "LeaseStub", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True)
        )
        if int(info.TTL) < 0:
            raise LeaseNotFoundError(lease_id)
        try:
            response = self._call(
                "LeaseStub", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id)
            )
        except LeaseNotFoundError:
            raise LeaseNotFoundError(lease_id) from None
        return int(response.header.revision) if info.keys else None

    # -- changes feed -------------------------------------------------------------------

    def changes(self, since_revision: int, prefix: str = "") -> list[Change]:
        low, high = self._prefix_bounds(prefix)
        current = self.revision()
        if since_revision > current:
            raise FutureRevisionError(
                f"revision {since_revision} is beyond the current revision {current}"
            )
        if since_revision == current:
            return []
        return [
            change
            for change in self._read_history(since_revision, current)
            if low <= self._ns + change.key.encode("utf-8") < high
        ]

    def _read_history(self, since: int, until: int) -> list[Change]:
        """Every event with revision in ``(since, until]``, from a watch on the whole key space.

        Every revision has at least one event somewhere (etcd 3.4's progress responses are
        not ordered with events, so they cannot say "caught up"): the watch is done once an
        event at ``until`` arrives.  Events of one revision come in one response.
        """
        request = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=b"\0", range_end=b"\0", start_revision=since + 1
            )
        )
        stub = rpc_pb2_grpc.WatchStub(self._channels[self._current])
        call = stub.Watch(iter([request]), timeout=max(self.timeout, 10.0))
        found: list[Change] = []
        try:
            for response in call:
                if response.compact_revision:
                    raise CompactedError(since, int(response.compact_revision) - 1)
                if response.canceled:
                    raise StoreUnavailableError(
                        f"etcd cancelled a watch: {response.cancel_reason or 'no reason'}"
                    )
                last = 0
                for event in response.events:
                    last = int(event.kv.mod_revision)
                    if last > until:
                        return found
                    if event.kv.key.startswith(self._ns):
                        found.append(self._change(event))
                if last >= until:
                    return found
        except grpc.RpcError as error:
            raise self._translate(error) from error
        finally:
            call.cancel()
        return found

    def _change(self, event: Any) -> Change:
        kv = event.kv
        if event.type == kv_pb2.Event.DELETE:
            return Change(
                kind=ChangeKind.DELETE,
                key=self._strip(kv.key),
                value=b"",
                revision=int(kv.mod_revision),
                create_revision=0,
                version=0,
                lease_id=None,
            )
        return Change(
            kind=ChangeKind.PUT,
            key=self._strip(kv.key),
            value=bytes(kv.value),
            revision=int(kv.mod_revision),
            create_revision=int(kv.create_revision),
            version=int(kv.version),
            lease_id=int(kv.lease) or None,
        )

    async def watch(
        self, prefix: str, since: int, *, progress_after: float = WATCH_PROGRESS_AFTER
    ) -> AsyncIterator[Change]:
        """Every change under ``prefix`` after revision ``since``, as etcd streams them.

        An async generator on ``grpc.aio``, one stream per call.  Raises
        :class:`CompactedError` when ``since`` is compacted and
        :class:`StoreUnavailableError` when the stream breaks: list again and re-watch.

        A stream can also break silently: after the etcd leader's SIGKILL, a replica's
        watch call was seen finished with its pending read never returning, so
        the replica's caches stopped following the store while its quorum reads went to
        the other members and succeeded.  So a stream silent for ``progress_after``
        seconds is checked: finished, it raises; else it asks etcd for its progress
        (``WatchProgressRequest``: the member answers at once, without a leader too), and
        no answer within as long again raises, the next request trying the next endpoint
        first.
        """
        low, high = self._prefix_bounds(prefix)
        endpoint = self.current_endpoint
        channel = (
            grpc.aio.insecure_channel(endpoint)
            if self._credentials is None
            else grpc.aio.secure_channel(endpoint, self._credentials)
        )
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        # Nothing of the call is awaited without a bound, nor cancelled and awaited (a
        # cancelled grpc.aio await was seen waiting ~6 s for a dead peer's socket): each is
        # a task waited on with a timeout, and left to end on its own.
        reading: asyncio.Future[Any] | None = None
        try:
            create = rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=low, range_end=high, start_revision=since + 1, progress_notify=True
                )
            )
            await _within(call.write(create), self.timeout, f"etcd at {endpoint}: no watch")
            asked = False
            while True:
                if reading is None:  # a read is never cancelled: that ends the call
                    reading = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({reading}, timeout=progress_after)
                if not done:
                    if call.done():  # finished, and the read was left waiting
                        raise StoreUnavailableError(f"etcd at {endpoint} ended the watch stream")
                    if asked:
                        self._skip(endpoint)
                        raise StoreUnavailableError(
                            f"etcd at {endpoint} left a watch silent: no answer to a "
                            f"progress request within {progress_after:g} s"
                        )
                    asked = True
                    progress = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
                    _unawaited(call.write(progress))  # its answer is what the next wait sees
                    continue
                response, reading, asked = reading.result(), None, False
                if response is grpc.aio.EOF:
                    break
                if response.compact_revision:
                    raise CompactedError(since, int(response.compact_revision) - 1)
                if response.canceled:
                    raise StoreUnavailableError(
                        f"etcd cancelled a watch: {response.cancel_reason or 'no reason'}"
                    )
                for event in response.events:
                    yield self._change(event)
        except grpc.RpcError as error:
            raise self._translate(error) from error
        except asyncio.InvalidStateError:  # written to after it finished
            raise StoreUnavailableError(f"etcd at {endpoint} ended the watch stream") from None
        finally:
            call.cancel()
            if reading is not None:
                _unawaited(reading)
            closing = asyncio.ensure_future(channel.close())
            await asyncio.wait({closing}, timeout=1.0)
            _unawaited(closing)
        raise StoreUnavailableError(f"etcd at {endpoint} ended the watch stream")

    def _skip(self, endpoint: str) -> None:
        """Requests start at the endpoint after ``endpoint`` if it is still the current one
        (it answers nothing: a deadline is not retried on the next endpoint)."""
        with self._lock:
            if self.endpoints[self._current] == endpoint:
                self._current = (self._current + 1) % len(self.endpoints)

    def compact(self, revision: int) -> None:
        current = self.revision()
        if revision > current:
            raise FutureRevisionError(
                f"cannot compact at {revision}: the current revision is {current}"
            )
        # etcd keeps the event *at* its compaction revision; the Store forgets it, so
        # compact one further when that revision exists (else keep slightly more history).
        target = revision + 1 if revision < current else revision
        try:
            self._call("KVStub", "Compact", rpc_pb2.CompactionRequest(revision=target))
        except StoreUnavailableError as error:
            if _COMPACTED not in str(error):
                raise

    def compact_revision(self) -> int:
        """The newest revision whose change is gone: one below the oldest readable revision,
        found by bisecting with historical reads (etcd does not report it directly)."""
        low, high = 1, self.revision()
        probe = self._ns + b"\0compaction-probe"
        while low < high:
            middle = (low + high) // 2
            try:
                self._call("KVStub", "Range", rpc_pb2.RangeRequest(key=probe, revision=middle))
            except StoreUnavailableError as error:
                if _COMPACTED not in str(error):
                    raise
                low = middle + 1
            else:
                high = middle
        return low - 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for channel in self._channels:
            channel.close()


def _check_expected(expected_mod_revision: int) -> None:
    if isinstance(expected_mod_revision, bool) or not isinstance(expected_mod_revision, int):
        raise TypeError("expected_mod_revision must be an int")
    if expected_mod_revision < 0:
        raise ValueError("expected_mod_revision must be >= 0 (0: the key must not exist)")


async def _within(awaitable: Awaitable[Any], timeout: float, what: str) -> Any:
    """``awaitable``'s result, or :class:`StoreUnavailableError` after ``timeout`` seconds
    (the awaitable is left running, never cancelled and awaited)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        _unawaited(task)
        raise StoreUnavailableError(f"{what} within {timeout:g} s")
    return task.result()


def _unawaited(future: asyncio.Future[Any] | Awaitable[Any]) -> None:
    """Let ``future`` end on its own; its error, if any, is read (not logged as lost)."""
    task = asyncio.ensure_future(future)

    def read(done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()

    task.add_done_callback(read)
