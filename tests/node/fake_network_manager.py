"""A fake ``org.freedesktop.NetworkManager`` for the D-Bus tests: ``python -m
tests.node.fake_network_manager BUS_ADDRESS STATE_JSON``.

It owns NetworkManager's bus name and answers ``org.freedesktop.DBus.Properties`` Get /
GetAll on ``/org/freedesktop/NetworkManager`` with the real property names and
signatures (``PrimaryConnectionType`` ``s``, ``Metered`` ``u``, ``State`` ``u``), read from
STATE_JSON on every call so the test changes the network by rewriting the file.  It
prints ``ready`` once the name is owned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

NAME = "org.freedesktop.NetworkManager"
PATH = "/org/freedesktop/NetworkManager"
SIGNATURES = {"PrimaryConnectionType": "s", "Metered": "u", "State": "u"}


def main(address: str, state_path: Path) -> None:
    connection = open_dbus_connection(address)
    reply = connection.send_and_get_reply(message_bus.RequestName(NAME, 4))  # do not queue
    assert reply.body[0] == 1, f"could not own {NAME}: {reply.body}"
    print("ready", flush=True)
    while True:
        message = connection.receive()
        header = message.header
        if header.message_type is not MessageType.method_call:
            continue
        fields = header.fields
        member = fields.get(HeaderFields.member)
        state = json.loads(state_path.read_text())
        properties = {key: (SIGNATURES[key], state[key]) for key in SIGNATURES if key in state}
        path = fields.get(HeaderFields.path)
        if path != PATH or member not in ("Get", "GetAll"):
            connection.send(new_error(message, "org.freedesktop.DBus.Error.UnknownMethod"))
        elif member == "GetAll":
            connection.send(new_method_return(message, "a{sv}", (properties,)))
        elif message.body[1] in properties:
            connection.send(new_method_return(message, "v", (properties[message.body[1]],)))
        else:
            connection.send(new_error(message, "org.freedesktop.DBus.Error.UnknownProperty"))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
