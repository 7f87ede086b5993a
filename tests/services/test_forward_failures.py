"""A forward whose stream the far node resets says why on the forwarding node's log."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from tests.node.harness import start_node


def test_forward_to_an_unknown_service_is_logged_where_the_user_is(tmp_path: Path) -> None:
    home = start_node(tmp_path, "home")  # serves no service called "nothing"
    try:
        laptop = start_node(
            tmp_path, "laptop",
            f'[[peers]]\nnode_id = "{home.node_id}"\nendpoints = ["{home.url}"]\n'
            'services = ["nothing"]\n\n[[forwards]]\nlisten = "127.0.0.1:0"\nservice = "nothing"\n',
        )  # fmt: skip
        try:
            listening = laptop.wait_for("forward listening", service="nothing")
            host, port = listening["address"].rsplit(":", 1)
            for _ in range(3):  # three connections, one log line (rate limited per code)
                with socket.create_connection((host, int(port)), timeout=10) as client:
                    client.sendall(b"hello")
                    with contextlib.suppress(ConnectionResetError):
                        assert client.recv(100) == b""
            line = laptop.wait_for("forward: stream reset by the far end", service="nothing")
            assert line["code"] == "SERVICE_UNAVAILABLE"
            assert "does not serve 'nothing'" in line["why"]
            assert line["level"] == "WARNING"
            home.wait_for("stream refused")  # the far node's side of the story
            assert laptop.terminate() == 0
            lines = laptop.drain_log()
            resets = [x for x in lines if x.get("event") == "forward: stream reset by the far end"]
            assert len(resets) == 1, resets
        finally:
            laptop.kill()
        assert home.terminate() == 0
    finally:
        home.kill()
