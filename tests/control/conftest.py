from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accessfabric.control.server.store import SqliteStore, Store
from accessfabric.control.server.store.etcd import EtcdStore
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from tests.etcd_cluster import (
    restart_dead_members,
    revoke_all_leases,
    start_session_cluster,
    unique_namespace,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "control.db", clock=clock, history=50) as opened:
        yield opened


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    """One real 3-member etcd cluster on loopback for the whole session."""
    yield from start_session_cluster(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def etcd_store(etcd_cluster: LocalEtcdCluster) -> Iterator[EtcdStore]:
    """An :class:`EtcdStore` in a fresh namespace of the session's cluster."""
    restart_dead_members(etcd_cluster)
    opened = EtcdStore(etcd_cluster.endpoints, namespace=unique_namespace())
    try:
        yield opened
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
        opened.close()


@pytest.fixture(params=["sqlite", "etcd"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """The store conformance tests run against both backends."""
    if request.param == "sqlite":
        with SqliteStore(tmp_path / "control.db", clock=clock, history=50) as opened:
            yield opened
    else:
        yield request.getfixturevalue("etcd_store")
