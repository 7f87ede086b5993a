from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accessfabric.control.store import SqliteStore


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
