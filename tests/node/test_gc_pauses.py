"""``freeze_startup_objects``: full collections skip what the process built at start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from accessfabric.node.host.gc_pauses import freeze_startup_objects


class _Built:
    """An object of the kind a node builds at start-up (tracked by the collector)."""

    def __init__(self) -> None:
        self.parts: list[object] = []


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session gets its collector back


def test_startup_objects_leave_the_collected_generations(frozen_heap: None) -> None:
    built = _Built()
    assert gc.is_tracked(built)
    assert any(obj is built for obj in gc.get_objects())

    frozen = freeze_startup_objects()

    # a frozen object can still die (a thread left by an earlier test drops one): never more
    assert 0 < gc.get_freeze_count() <= frozen
    assert not any(obj is built for obj in gc.get_objects())
    later = _Built()
    assert any(obj is later for obj in gc.get_objects())  # new objects are collected as usual


def test_garbage_cycles_are_collected_before_freezing(frozen_heap: None) -> None:
    cycle = _Built()
    cycle.parts.append(cycle)
    del cycle
    freeze_startup_objects()
    assert not any(isinstance(obj, _Built) for obj in gc.get_objects())
    assert gc.get_freeze_count() > 0
    # the cycle was reclaimed, not frozen: nothing of its type survives anywhere
    gc.unfreeze()
    assert not any(isinstance(obj, _Built) for obj in gc.get_objects())
