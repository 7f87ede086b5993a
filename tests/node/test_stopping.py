"""Stopping and restarting a node cleanly: a second signal, SIGHUP reload, one process per key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from tests.node.harness import COMMAND, command_env, run_cli, start_node


async def test_a_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    node = await loop.run_in_executor(None, start_node, tmp_path, "c", "drain_timeout = 30")
    try:
        local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
        connection = await connect_tcp(
            local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=5
        )
        stream = await connection.open_stream("echo")  # kept open: the drain would wait 30 s
        stream.write(b"x")
        assert await stream.readexactly(1) == b"x"
        node.process.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, node.wait_for, "node draining")
        started = time.monotonic()
        node.process.send_signal(signal.SIGINT)
        await loop.run_in_executor(None, node.wait_for, "drain cut short")
        code = await loop.run_in_executor(None, node.process.wait, 15)
        assert code == 0
        assert time.monotonic() - started < 10  # far from the 30 s drain_timeout
        stopped = node.wait_for("node stopped")
        assert stopped["drained"] is False
        connection.abort()
    finally:
        node.kill()


def test_sighup_reloads_what_it_can_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    peer_id = NodeKey.generate().node_id
    peer = f'[[peers]]\nnode_id = "{peer_id}"\nendpoints = ["tcp://127.0.0.1:1"]\n'
    node = start_node(tmp_path, "n", f"drain_timeout = 10\n{peer}")
    try:
        config = tmp_path / "n.toml"
        text = config.read_text()
        changed = text.replace("drain_timeout = 10", 'drain_timeout = 3\nroles = ["relay"]')
        config.write_text(changed.replace("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"))
        node.process.send_signal(signal.SIGHUP)
        reloaded = node.wait_for("config reloaded")
        assert set(reloaded["applied"].split(",")) == {"drain_timeout", "peers (endpoints)"}
        assert node.wait_for("config change needs a restart")["keys"] == "roles"

        config.write_text("this is = not [toml")  # a broken file is ignored, loudly
        node.process.send_signal(signal.SIGHUP)
        assert "n.toml" in node.wait_for("reload failed, config unchanged")["error"]
        assert node.process.poll() is None  # still running (no exit 129)
        assert node.terminate() == 0
        assert node.wait_for("node draining")["timeout"] == 3.0  # the reloaded drain_timeout
    finally:
        node.kill()


def test_one_process_per_node_key(tmp_path: Path) -> None:
    node = start_node(tmp_path, "k")
    try:
        config = tmp_path / "k.toml"
        for args in (
            ("node", "run", "--config", str(config)),
            ("forward", "--listen", "127.0.0.1:0", "--service", "x", "--config", str(config)),
        ):
            second = run_cli(*args, timeout=30)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert str(tmp_path / "k.key") in lines[0]
            assert node.node_id in lines[0]
            assert f"in use by pid {node.process.pid}" in lines[0]
        assert node.process.poll() is None
        assert node.terminate() == 0
        # the lock goes with the process: the key runs again at once
        again = subprocess.Popen(
            [*COMMAND, "node", "run", "--config", str(config)], env=command_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert again.stderr is not None
            for line in again.stderr:
                if "node ready" in line:
                    break
            again.send_signal(signal.SIGTERM)
            assert again.wait(15) == 0
        finally:
            if again.poll() is None:
                again.kill()
                again.wait()
            assert again.stderr is not None
            again.stderr.close()
        assert os.stat(tmp_path / "k.key.lock").st_mode & 0o777 == 0o600
    finally:
        node.kill()
