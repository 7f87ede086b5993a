"""Let-go resume tokens are forgotten when their time is up, whatever order they came in."""

from __future__ import annotations

import pytest

from accessfabric.node.serving import served_ends
from accessfabric.node.serving.served_ends import ServedEnds


def _ends() -> ServedEnds:
    return ServedEnds(resume_window=30.0)


def test_expired_tokens_behind_a_long_lived_one_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(served_ends, "RETIRED_LIMIT", 8)
    ends = _ends()
    ends._retired[b"long"] = 1000.0  # let go first, remembered until its lease ends
    for n in range(6):
        ends._retired[b"short%d" % n] = 10.0 + n
    ends._retired[b"fresh"] = 500.0
    ends.forget_retired(now=100.0)
    assert ends.retired_tokens == {b"long", b"fresh"}


def test_the_limit_evicts_the_oldest_only_when_that_many_still_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(served_ends, "RETIRED_LIMIT", 4)
    ends = _ends()
    for n in range(6):
        ends._retired[b"t%d" % n] = 1000.0
    ends.forget_retired(now=100.0)
    assert ends.retired_tokens == {b"t2", b"t3", b"t4", b"t5"}
