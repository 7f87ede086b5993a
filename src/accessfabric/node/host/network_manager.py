"""Network type and metered state from NetworkManager, over D-Bus (issue 22, ADR 0026).

NetworkManager's root object (``/org/freedesktop/NetworkManager`` on the system bus,
interface ``org.freedesktop.NetworkManager``) has two properties that say what the
node cannot measure itself:

* ``PrimaryConnectionType`` (``s``): the type of the connection that carries the default
  route — ``802-3-ethernet`` (wired), ``802-11-wireless`` (wifi), ``gsm`` / ``cdma``
  (cellular), others (bluetooth, vpn, wireguard, …) are ``unknown``; ``""`` when offline.
* ``Metered`` (``u``, NMMetered): 0 unknown, 1 yes, 2 no, 3 guess-yes, 4 guess-no; yes and
  guess-yes are metered (NetworkManager guesses yes for a phone's hotspot).

:func:`read_network_manager` asks for both with one ``Properties.GetAll`` through
jeepney (pure Python, no libdbus).  No bus, no NetworkManager on it, an error reply or a
bus slower than ``timeout`` all give None: the node then uses ``[device] network_type``
and ``metered`` from its config, so a container or a machine without NetworkManager
behaves exactly as before.  The monitor polls (``[device] network_manager_interval``);
the properties change only on a network change, a few times a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, MessageType, Properties
from jeepney.io.asyncio import DBusRouter, open_dbus_connection

NM_BUS_NAME = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
NM_INTERFACE = "org.freedesktop.NetworkManager"
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

CONNECTION_TYPES = {
    "802-3-ethernet": "wired",
    "802-11-wireless": "wifi",
    "gsm": "cellular",
    "cdma": "cellular",
}
"""NetworkManager connection types -> ``network_type`` (others are ``unknown``)."""
METERED_VALUES = {1: True, 3: True, 2: False, 4: False}
"""NMMetered -> metered (0, unknown, gives None: the config decides)."""


@dataclass(frozen=True, slots=True)
class NetworkFacts:
    network_type: str | None
    """``wired`` / ``wifi`` / ``cellular`` / ``unknown``; None: no primary connection."""
    metered: bool | None
    """None: NetworkManager does not know."""


def system_bus_address() -> str:
    """``$DBUS_SYSTEM_BUS_ADDRESS``, else the standard socket."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def facts_from_properties(properties: dict[str, Any]) -> NetworkFacts:
    """The facts from a ``GetAll`` reply's ``{name: (signature, value)}``."""
    kind = properties.get("PrimaryConnectionType")
    network_type: str | None = None
    if isinstance(kind, tuple) and len(kind) == 2 and isinstance(kind[1], str) and kind[1]:
        network_type = CONNECTION_TYPES.get(kind[1], "unknown")
    metered_value = properties.get("Metered")
    metered: bool | None = None
    if isinstance(metered_value, tuple) and len(metered_value) == 2:
        value = metered_value[1]
        if isinstance(value, int) and not isinstance(value, bool):
            metered = METERED_VALUES.get(value)
    return NetworkFacts(network_type, metered)


async def read_network_manager(address: str, timeout: float = 2.0) -> NetworkFacts | None:
    """NetworkManager's view of the primary connection, or None when it cannot be asked."""
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that lands as the
        # read fails (no bus), and the watch loop would outlive the node's shutdown
        async with asyncio.timeout(timeout):
            return await _read(address)
    except (OSError, EOFError, ValueError, KeyError, StopIteration, TimeoutError, RuntimeError):
        return None  # no bus, refused, too slow; RuntimeError: not a unix: address


async def _read(address: str) -> NetworkFacts | None:
    connection = await open_dbus_connection(address)
    try:
        async with DBusRouter(connection) as router:
            message = Properties(DBusAddress(NM_PATH, NM_BUS_NAME, NM_INTERFACE)).get_all()
            reply = await router.send_and_get_reply(message)
    finally:
        with contextlib.suppress(OSError):
            await connection.close()
    if reply.header.message_type is not MessageType.method_return:
        return None  # org.freedesktop.DBus.Error.ServiceUnknown: no NetworkManager
    body = reply.body
    if not body or not isinstance(body[0], dict):
        return None
    return facts_from_properties(body[0])
