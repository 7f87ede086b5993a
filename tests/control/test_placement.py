"""Session placement: least loaded first, then locality, spread by rendezvous hashing."""

from __future__ import annotations

from collections import Counter

from accessfabric.control.server.placement import LOAD_BAND_SESSIONS, EntryCandidate, place


def _primary(candidates: list[EntryCandidate], devices: int = 1000) -> Counter[str]:
    return Counter(place(f"device-{i}", candidates)[0] for i in range(devices))


def test_equal_entries_share_the_devices_evenly() -> None:
    pool = [EntryCandidate(n, 0, True, None) for n in ("a", "b", "c")]
    counts = _primary(pool, 3000)
    assert set(counts) == {"a", "b", "c"}
    assert all(800 <= c <= 1200 for c in counts.values()), counts


def test_least_loaded_first_beyond_the_band() -> None:
    pool = [EntryCandidate("busy", 5 * LOAD_BAND_SESSIONS, True, None),
            EntryCandidate("idle", 0, True, None)]  # fmt: skip
    assert _primary(pool) == Counter({"idle": 1000})


def test_within_the_band_loads_count_as_equal() -> None:
    pool = [EntryCandidate("a", LOAD_BAND_SESSIONS - 1, True, None),
            EntryCandidate("b", 0, True, None)]  # fmt: skip
    counts = _primary(pool)
    assert counts["a"] > 300 and counts["b"] > 300, counts


def test_then_own_region_then_measured_rtt() -> None:
    far = EntryCandidate("far", 0, False, 1.0)
    near = EntryCandidate("near", 0, True, None)
    assert _primary([far, near]) == Counter({"near": 1000})
    measured = EntryCandidate("measured", 0, True, 3.0)
    assert _primary([near, measured]) == Counter({"measured": 1000})


def test_alternates_follow_and_a_dead_entrys_devices_spread() -> None:
    pool = [EntryCandidate(n, 0, True, None) for n in ("a", "b", "c")]
    orders = [place(f"device-{i}", pool) for i in range(3000)]
    assert all(sorted(o) == ["a", "b", "c"] for o in orders)
    # The devices of "a" move to their first alternate: both others take a share.
    moved = Counter(o[1] for o in orders if o[0] == "a")
    assert set(moved) == {"b", "c"} and min(moved.values()) > 300, moved
