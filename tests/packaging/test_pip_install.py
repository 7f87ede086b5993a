"""``pip install .`` into a fresh venv, then the installed ``accessfabric`` runs a benchmark.

A real install (wheel built by pip, runtime dependencies resolved by pip, no
system site packages): the package must work from its wheel alone, and a suite
whose baseline needs the ``bench`` extra must say so in one line, not a traceback.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pip_install_then_bench_codec(tmp_path: Path) -> None:
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("not run from a source checkout")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    licenses = list(env_dir.glob("lib/python3*/site-packages/accessfabric-*.dist-info/**/LICENSE"))
    assert licenses, "the wheel carries no LICENSE"
    assert "Apache License" in licenses[0].read_text() and "Version 2.0" in licenses[0].read_text()
    clean_env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    command = env_dir / "bin" / "accessfabric"
    codec = subprocess.run(
        [command, "bench", "codec", "--quick", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean_env,
    )  # fmt: skip
    assert codec.returncode == 0, codec.stderr
    report = json.loads(codec.stdout)
    assert report["suite"] == "codec" and report["results"]
    where = subprocess.run(
        [python, "-c", "import accessfabric, sys; print(accessfabric.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env,
    )  # fmt: skip
    assert str(env_dir) in where.stdout  # the installed copy, not these sources
    carrier = subprocess.run(
        [command, "bench", "carrier", "--quick"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean_env,
    )  # fmt: skip
    assert carrier.returncode == 2, carrier.stderr
    assert "Traceback" not in carrier.stderr
    assert "pip install 'accessfabric[bench]'" in carrier.stderr
