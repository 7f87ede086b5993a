"""What this build is: package version, source commit, protocol versions (``version``, metrics).

The commit comes from the source checkout the package runs from (``git
rev-parse``), or ``unknown`` for an installed wheel without one.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

from accessfabric import __version__

CONTROL_API_VERSION = "v1"
"""The control plane's HTTP API (``/v1/...``, docs/control.md)."""


@functools.cache
def source_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = done.stdout.strip()
    if done.returncode != 0 or not commit:
        return "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()  # fmt: skip
    return f"{commit}-dirty" if dirty else commit


def fabric_protocol_versions() -> tuple[int, ...]:
    from accessfabric.session.config import SessionConfig

    return tuple(SessionConfig().versions)


def version_info() -> dict[str, Any]:
    return {
        "version": __version__,
        "commit": source_commit(),
        "protocols": {
            "fabric_session": list(fabric_protocol_versions()),
            "control_api": CONTROL_API_VERSION,
        },
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


def version_text() -> str:
    info = version_info()
    protocols = info["protocols"]
    fabric = ",".join(str(v) for v in protocols["fabric_session"])
    return (
        f"accessfabric {info['version']} (commit {info['commit']})\n"
        f"protocols: fabric session v{fabric}, control API {protocols['control_api']}\n"
        f"python {info['python']} on {info['platform']}"
    )
