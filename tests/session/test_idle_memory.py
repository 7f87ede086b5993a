"""What an idle session costs in Python heap, in memory alone (issue 17: entry RSS per idle
session <= 64 KiB; ADR 0044).

Sans-IO and deterministic: N session pairs complete the handshake in memory
(``tests/session/pair.py``), some then carry one stream to its end, and tracemalloc
counts what they keep.  No socket, no TLS, no event loop: every byte counted is the
session's own (its slots, scheduler, decoder, pacer, windows, handshake record), so a
per-session structure added later (an instance ``__dict__``, a dict per traffic class,
a deque, a bound-method dispatch table) shows here.  The carrier's and asyncio's share is
``tests/node/test_idle_session_memory.py``'s.
"""

from __future__ import annotations

import gc
import tracemalloc

from accessfabric.session import Session, SessionConfig
from tests.session.pair import Pair, make_pair

PAIRS = 40
BOUND_PER_SESSION = 5 * 1024
"""Heap bytes an idle session keeps after its handshake (pacing on, as nodes run it).
Measured 2026-12-07 (ADR 0044): 10.8 KiB before ``__slots__``, the per-class dispatch
table and the lazily made per-class structures, 3.5 KiB after."""
BOUND_AFTER_STREAM = 6 * 1024
"""The same once one stream has been opened, carried bytes both ways and ended: the
session forgets it and keeps its class's totals and scheduler entry (measured 11.6 KiB
before, 4.7 KiB after)."""


def _config() -> SessionConfig:
    return SessionConfig(pacing_target_delay=0.005)


def _ended_stream(pair: Pair) -> None:
    stream_id = pair.a.open_stream("svc")
    pair.a.send_data(stream_id, b"x" * 70_000, end_stream=True)
    pair.pump()
    pair.b.acknowledge_received(stream_id, 70_000)
    pair.b.send_data(stream_id, b"y" * 3_000, end_stream=True)
    pair.pump()
    pair.a.acknowledge_received(stream_id, 3_000)
    pair.pump()
    assert not pair.a.stream_ids() and not pair.b.stream_ids()
    pair.events_a.clear()
    pair.events_b.clear()


def _per_session(with_stream: bool) -> tuple[float, list[str]]:
    make_pair(_config(), _config())  # warm-up: per-class tables, caches, interned names
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        pairs = [make_pair(_config(), _config()) for _ in range(PAIRS)]
        if with_stream:
            for pair in pairs:
                _ended_stream(pair)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert all(isinstance(p.a, Session) for p in pairs)
    stats = after.compare_to(before, "lineno")
    per_session = sum(s.size_diff for s in stats) / (2 * PAIRS)
    top = [f"{s.size_diff / (2 * PAIRS):7.0f} B {s.traceback[0]}" for s in stats[:10]]
    return per_session, top


def test_an_idle_session_keeps_a_small_heap() -> None:
    per_session, top = _per_session(with_stream=False)
    assert per_session <= BOUND_PER_SESSION, "\n".join([f"{per_session:.0f} B", *top])
    assert per_session > 1024  # the measurement sees the sessions at all


def test_a_session_keeps_nothing_of_an_ended_stream() -> None:
    per_session, top = _per_session(with_stream=True)
    assert per_session <= BOUND_AFTER_STREAM, "\n".join([f"{per_session:.0f} B", *top])


def test_sessions_have_no_instance_dict() -> None:
    """``__slots__`` all the way up: a part that forgets them brings the ~3 KiB dict back."""
    pair = make_pair()
    assert not hasattr(pair.a, "__dict__")
