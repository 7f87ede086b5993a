"""Every shell block of README.md runs as written (tests/readme/blocks.py has the conventions).

Each script runs with bash (a script: no job control) in a fresh temporary
directory holding ``.venv/bin/accessfabric`` (these sources), inside a network
namespace of its own — the README's fixed loopback ports cannot collide with a
parallel run and no packet leaves it. It must exit 0, print its documented
output, and leave no process behind (every process it started carries a marker
in its environment; any still alive afterwards fails the test and is killed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

import accessfabric
from tests.readme.blocks import ShellBlock, shell_blocks

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SOURCES = Path(accessfabric.__file__).resolve().parents[1]
MARKER = "ACCESSFABRIC_README_TEST_RUN"  # not a config override: config reads known names only
BLOCKS = shell_blocks(README)
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="runs each block in its own network namespace: needs root and unshare",
)


def _make_targets(block: ShellBlock) -> list[str] | None:
    """The targets of a block of ``make TARGET`` lines only, else None."""
    targets: list[str] = []
    for line in block.script.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command:
            continue
        words = command.split()
        if words[0] != "make" or len(words) != 2:
            return None
        targets.append(words[1])
    return targets or None


def _survivors(run_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == run_id:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _install_shim(work: Path) -> None:
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "accessfabric"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m accessfabric "$@"\n')
    shim.chmod(0o755)


def _run_script(block: ShellBlock, work: Path) -> subprocess.CompletedProcess[str]:
    run_id = uuid.uuid4().hex
    script = work / "block.sh"
    script.write_text(block.script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    env.update(PYTHONPATH=str(SOURCES), TMPDIR=str(work), HOME=str(work), **{MARKER: run_id})
    command = ["unshare", "--net", "bash", "-c", 'ip link set lo up && exec bash "$0"', script]
    try:
        done = subprocess.run(
            command, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"README line {block.line}: still running after 120 s\n{timeout.stdout!r}\n"
                    f"{timeout.stderr!r}")  # fmt: skip
    finally:
        survivors = _survivors(run_id)
        names = [" ".join(p.cmdline()[:6]) for p in survivors if p.is_running()]
        for process in survivors:
            process.kill()
        psutil.wait_procs(survivors, timeout=10)
    assert not names, f"README line {block.line}: processes left behind: {names}"
    return done


def test_readme_has_runnable_blocks() -> None:
    assert len(BLOCKS) >= 4
    skipped = [b.line for b in BLOCKS if b.not_run_reason is not None]
    assert len(skipped) <= 1, f"keep `# readme: not run` rare: lines {skipped}"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_block_runs(block: ShellBlock, tmp_path: Path) -> None:
    if block.not_run_reason is not None:
        pytest.skip(block.not_run_reason)
    targets = _make_targets(block)
    if targets is not None:
        # `make test` is this suite and `make demo` is tests/services/test_demo.py: here
        # the targets must exist and expand (make -n runs nothing).
        for target in targets:
            done = subprocess.run(
                ["make", "-n", "-C", str(REPO), target], capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
        return
    _install_shim(tmp_path)
    done = _run_script(block, tmp_path)
    transcript = f"README line {block.line}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, transcript
    position = 0
    for line in block.expected_output:
        match = block.output_pattern(line).search(done.stdout, position)
        assert match is not None, f"expected {line!r} (in order)\n{transcript}"
        position = match.end()
