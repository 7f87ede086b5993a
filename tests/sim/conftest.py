"""Fixtures of the sim tests: namespace tests skip with the precise reason they cannot run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from accessfabric.sim import Topology, netns_unavailable_reason, tun_unavailable_reason
from accessfabric.sim.namespaces import list_namespaces


@pytest.fixture(autouse=True)
def _skip_without_netns(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") is None:
        return
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def ping() -> str:
    path = shutil.which("ping")
    if path is None:
        pytest.skip("ping not found on PATH (Debian package iputils-ping)")
    return path


@pytest.fixture
def tun_ok() -> None:
    reason = tun_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def topo() -> Iterator[Topology]:
    """A fresh topology; after the test, none of its namespaces may remain."""
    with Topology(prefix="aft") as topology:
        yield topology
    leftovers = set(topology.namespaces) & set(list_namespaces())
    assert not leftovers, f"namespaces left behind: {sorted(leftovers)}"
