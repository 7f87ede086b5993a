"""The session's real etcd cluster (3 members on loopback), shared by every etcd test.

Tests get it through the ``etcd_cluster`` fixture (``tests/control/conftest.py``); it is
started once per session, on first use, and stopped at the end.  A test that kills a
member restarts it (``restart_dead_members``) so later tests see a full cluster.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster, etcd_binary


def start_session_cluster(base: Path) -> Iterator[LocalEtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed on this machine (apt-get install etcd-server)")
    cluster = LocalEtcdCluster(base, size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def restart_dead_members(cluster: LocalEtcdCluster) -> None:
    for member in cluster.members:
        if not member.running:
            cluster.restart(member)
    cluster.wait_all_ready()


def unique_namespace() -> str:
    return f"/test-{secrets.token_hex(4)}"


def revoke_all_leases(endpoints: list[str]) -> None:
    """Revoke every lease on the cluster (test teardown: no expiry lands in the next test)."""
    import grpc

    from accessfabric.control.server.store.etcd_grpc import rpc_pb2, rpc_pb2_grpc

    for endpoint in endpoints:  # the first member that answers (one may be down)
        with grpc.insecure_channel(endpoint) as channel:
            stub = rpc_pb2_grpc.LeaseStub(channel)
            try:
                leases = stub.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=5).leases
            except grpc.RpcError:
                continue
            for lease in leases:
                with contextlib.suppress(grpc.RpcError):
                    stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), timeout=5)
            return
