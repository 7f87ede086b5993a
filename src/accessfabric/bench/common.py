"""Helpers the socket benchmarks share: node identities, TLS contexts, the event loop, RSS."""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context, server_context
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.host.allocator import keep_large_blocks
from accessfabric.session import SessionConfig

T = TypeVar("T")

LOOP_ENV = "ACCESSFABRIC_BENCH_LOOP"
"""``uvloop`` (default when installed) or ``asyncio``."""


def loop_name() -> str:
    wanted = os.environ.get(LOOP_ENV, "uvloop")
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return "asyncio"


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (None if Linux's /proc cannot say).

    A process that has exited but is not yet reaped still answers, with its final figures.
    """
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed (what the node runtime uses), else asyncio;
    with the allocator tuned as ``node run`` tunes it."""
    keep_large_blocks()
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


@dataclass(frozen=True)
class BenchNode:
    """One node identity for a benchmark: its key, TLS files and the contexts made from them."""

    key: NodeKey
    cert_dir: Path

    @classmethod
    def make(cls, seed: bytes, cert_dir: Path) -> BenchNode:
        return cls(NodeKey.from_seed(seed), cert_dir)

    def local(self, config: SessionConfig | None = None) -> LocalNode:
        return LocalNode(self.key, self.cert_dir, config or SessionConfig())

    def server_ssl(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """The same TLS 1.3 server context the fabric uses (optionally with ALPN)."""
        context = server_context(self.key, self.cert_dir)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    def client_ssl(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = client_context(self.key, self.cert_dir)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    @property
    def cert_path(self) -> Path:
        return self.cert_dir / f"{self.key.node_id}.crt"

    @property
    def key_path(self) -> Path:
        return self.cert_dir / f"{self.key.node_id}.key"


def rss_bytes() -> int:
    """This process's resident set size now (``VmRSS`` of ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def machine_note() -> str:
    import platform

    return (
        f"{os.cpu_count()} vCPU, {platform.python_implementation()} {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}, loop {loop_name()}"
    )
