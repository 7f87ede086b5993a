"""Run ``async def`` tests of this package in a fresh asyncio loop with a deadline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.async_tests import run_async_test
from tests.node.harness import NodeProcess, start_node

TEST_DEADLINE = 30.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    return run_async_test(pyfuncitem, TEST_DEADLINE)


@pytest.fixture(scope="session")
def node_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Two real ``node run`` processes: ``b`` keeps a session up to ``a`` (a static peer)."""
    directory = tmp_path_factory.mktemp("nodes")
    a = start_node(directory, "a")
    try:
        peer = f'[[peers]]\nnode_id = "{a.node_id}"\nendpoints = ["{a.url}"]\nconnect = "always"\n'
        b = start_node(directory, "b", peer)
    except BaseException:
        a.kill()
        raise
    try:
        yield a, b
    finally:
        for node in (a, b):
            node.kill()
