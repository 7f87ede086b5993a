"""Build and run the Go peer (``interop/go-peer``): Go's crypto/tls and standard library,
plus, for sealing, flynn/noise and x/crypto from Debian (``/usr/share/gocode``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[2] / "interop" / "go-peer"


DEBIAN_GOCODE = Path("/usr/share/gocode")
"""Where Debian's golang-github-flynn-noise-dev and golang-golang-x-crypto-dev put their
source (a GOPATH tree)."""


def build_go_peer(directory: Path) -> Path:
    """``go build`` offline in GOPATH mode over Debian's Go source packages: no module
    downloads (GOPROXY=off), no cgo, caches in ``directory``."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed (Debian golang-go; make test installs it)")
    if not (DEBIAN_GOCODE / "src" / "github.com" / "flynn" / "noise").is_dir():
        pytest.skip("Debian golang-github-flynn-noise-dev is not installed (make test installs it)")
    binary = directory / "go-peer"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "GOCACHE": str(directory / "gocache"),
        "GOPATH": f"{directory / 'gopath'}:{DEBIAN_GOCODE}",
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SOURCE, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return binary


@dataclass
class GoAcceptor:
    process: subprocess.Popen[str]
    address: str
    node_id: str
    stderr: list[str]

    @property
    def url(self) -> str:
        return f"tcp://{self.address}"


@contextmanager
def go_acceptor(binary: Path, *extra: str) -> Iterator[GoAcceptor]:
    """``go-peer accept`` on a loopback port; stopped (by its pid) when the block ends."""
    process = subprocess.Popen(
        [str(binary), "accept", "-listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline().split()
        assert first[:1] == ["listening"], first
        lines: list[str] = []
        stderr = process.stderr
        threading.Thread(target=lambda: lines.extend(stderr), daemon=True).start()
        yield GoAcceptor(process, first[1], first[2], lines)
    finally:
        process.kill()
        process.wait(10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
