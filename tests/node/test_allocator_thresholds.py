"""keep_large_blocks: large bytes made and freed in turn reuse heap memory (ADR 0041)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A reader's turn: 256 KiB and 192 KiB joined from frame-sized pieces, freed next turn.
CHURN = """
import resource, sys
from accessfabric.node.host.allocator import keep_large_blocks
tuned = keep_large_blocks() if sys.argv[1] == "tune" else None
parts = [bytes(64 * 1024) for _ in range(4)]
for _ in range(50):
    b"".join(parts)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(500):
    whole = b"".join(parts)
    most = b"".join(parts[:3])
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if "MALLOC" not in k and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env={**clean, "PYTHONPATH": SRC, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_are_reused_instead_of_mapped_per_allocation() -> None:
    tuned, tuned_faults = _churn("tune")
    _, default_faults = _churn("default")
    assert tuned == "True"
    # Default glibc maps (and faults in) each 192-256 KiB block: ~100 faults per turn.
    assert default_faults >= 10_000
    assert tuned_faults < default_faults // 10


def test_the_environment_wins() -> None:
    tuned, _ = _churn("tune", MALLOC_MMAP_THRESHOLD_="131072")
    assert tuned == "False"


def test_the_c_library_is_looked_up_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """``find_library`` forks ``ldconfig``: a fleet worker's every device start did it
    (issue 17). Now once per process, however many node runtimes start."""
    import ctypes.util

    from accessfabric.node.host import allocator

    calls = []
    real = ctypes.util.find_library

    def counting(name: str) -> str | None:
        calls.append(name)
        return real(name)

    allocator._libc.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", counting)
    try:
        trims = [allocator.AllocatorTrim() for _ in range(5)]
        assert len(calls) == 1
        assert all((t._trim is None) == (trims[0]._trim is None) for t in trims)
    finally:
        allocator._libc.cache_clear()
