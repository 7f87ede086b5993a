"""``vpn up`` argument checks and TUN errors in the user's terms (one line, exit 2 or 1).

Checked before anything is created: the device name fits Linux's 15 characters
(``IFNAMSIZ`` - 1; the kernel would cut it silently), ``--address`` is an
interface address (``10.99.0.2/24``) and every ``--route`` a network
(``10.0.0.0/24``, host bits clear, as ``ip route`` wants it).
"""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from collections.abc import Sequence

MAX_DEVICE_NAME = 15


def argument_problems(dev: str, address: str | None, routes: Sequence[str]) -> list[str]:
    problems = []
    if not dev or len(dev.replace("%d", "0")) > MAX_DEVICE_NAME:
        problems.append(
            f"--dev: {dev!r} is {len(dev)} characters; Linux device names have 1 to "
            f"{MAX_DEVICE_NAME}"
        )
    elif "/" in dev or any(c.isspace() for c in dev):
        problems.append(f"--dev: {dev!r}: a device name has no '/' or spaces")
    if address is not None:
        try:
            ipaddress.ip_interface(address)
        except ValueError:
            problems.append(
                f"--address: {address!r} is not an address with a prefix (e.g. 10.99.0.2/24)"
            )
    for route in routes:
        try:
            ipaddress.ip_network(route)
        except ValueError as error:
            hint = ""
            try:
                hint = f"; did you mean {ipaddress.ip_network(route, strict=False)}?"
            except ValueError:
                hint = " (e.g. 10.0.0.0/24)"
            problems.append(f"--route: {route!r}: {error}{hint}")
    return problems


def describe_setup_error(error: OSError | subprocess.CalledProcessError, dev: str) -> str:
    """One line for a TUN device that could not be made or configured."""
    if isinstance(error, subprocess.CalledProcessError):
        command = " ".join(str(part) for part in error.cmd)
        output = (error.stderr or error.stdout or "").strip().splitlines()
        said = output[-1] if output else f"exit {error.returncode}"
        return f"`{command}` failed: {said}"
    if error.errno == errno.EBUSY:
        return (
            f"device {dev!r} exists and is in use (another vpn up?); stop it or pick another --dev"
        )
    if error.errno == errno.EINVAL:
        return f"device {dev!r} exists and is not a TUN device of ours; pick another --dev"
    if error.errno == errno.ENOENT:
        return "/dev/net/tun is missing (load the tun module: modprobe tun)"
    return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
