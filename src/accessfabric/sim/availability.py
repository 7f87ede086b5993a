"""Can this machine run the namespace tests?  Answer with the precise reason if not."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import sys

from accessfabric.sim.commands import CommandError, run_command
from accessfabric.sim.tun import TUN_PATH

# Tool -> the Debian package that ships it.
REQUIRED_TOOLS = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "sysctl": "procps"}


class NetnsUnavailable(RuntimeError):
    """Raised by :func:`require_netns` with the reason namespace tests cannot run."""


@functools.cache
def netns_unavailable_reason() -> str | None:
    """``None`` when namespaces, veths, tc and nft all work here; else why not."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespace tests need root (euid is not 0)"
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool!r} not found on PATH (Debian package {package})"
    return _probe_namespace()


@functools.cache
def tun_unavailable_reason() -> str | None:
    """``None`` when TUN devices can be opened here; else why not."""
    reason = netns_unavailable_reason()
    if reason is not None:
        return reason
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} is missing (load the tun module)"
    if not os.access(TUN_PATH, os.R_OK | os.W_OK):
        return f"{TUN_PATH} is not readable and writable"
    return None


def require_netns() -> None:
    """Raise :class:`NetnsUnavailable` unless namespace tests can run here."""
    reason = netns_unavailable_reason()
    if reason is not None:
        raise NetnsUnavailable(reason)


def _probe_namespace() -> str | None:
    name = f"afprobe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        run_command(["ip", "netns", "add", name])
    except CommandError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        run_command(["ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        run_command(["ip", "netns", "exec", name, "nft", "list", "ruleset"])
        run_command(["tc", "-n", name, "qdisc", "show"])
    except CommandError as exc:
        return f"namespace probe failed: {exc}"
    finally:
        run_command(["ip", "netns", "del", name], check=False)
    return None
