"""The directory benchmark suite is registered and measures one small synthetic fleet."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessfabric.bench import SUITES, load_suite
from accessfabric.bench.directory import SIZES_ENV, run


def test_directory_suite_reports_memory_deltas_and_planner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SUITES["directory"] == "accessfabric.bench.directory"
    assert callable(load_suite("directory"))
    monkeypatch.setenv(SIZES_ENV, "1000")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    report = run(quick=True)
    figures = {r.metric: r for r in report.results}
    assert figures["directory memory 1k"].baseline_metric == "signed records alone 1k"
    delta = figures["delta bytes per change 1k"]
    assert 0 < delta.value < delta.baseline_value  # one entry, not the whole directory
    assert figures["other tenant's delta 1k"].value < delta.value  # no entries at all
    assert figures["planner p99 1k"].value > 0
    assert "1M extrapolated" in report.notes
