"""systemd's readiness protocol (``Type=notify``) without a dependency: one datagram per state.

When systemd starts the node it sets ``NOTIFY_SOCKET`` (a unix datagram socket;
a leading ``@`` is the abstract namespace).  The node sends ``READY=1`` once it
listens, ``RELOADING=1`` then ``READY=1`` around a SIGHUP reload, ``STOPPING=1``
when it starts draining, and ``STATUS=`` lines people see in ``systemctl
status``.  Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``STATUS=...``) as one datagram; True if it was sent."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not states:
        return False
    message = "\n".join(states).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(_address(target))
            sock.sendall(message)
        except OSError:
            return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with the monotonic time systemd 253+ wants for ``Type=notify-reload``."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
