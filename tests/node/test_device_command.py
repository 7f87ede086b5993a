"""``accessfabric device``: a running node's own facts, and the app wrapper's foreground call.

A real ``node run`` (mobile-edge, opted in to relaying, ``relay_requires_foreground``) and
the real CLI over its admin socket: ``device`` prints the node's measured facts; ``device
--foreground false`` pauses its mobile relaying (the node logs it, ``status`` shows it),
``--foreground unknown`` lifts the pause.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.node.harness import run_cli, start_node

DEVICE = (
    'roles = ["mobile-edge", "entry"]\n'
    "[device]\nrelay_opt_in = true\nrelay_requires_foreground = true\n"
    'power_supply = "none"\nnetwork_manager = false\n'
)


async def test_device_command_shows_facts_and_sets_foreground(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    node = await loop.run_in_executor(None, lambda: start_node(tmp_path / "m", "m", DEVICE))
    socket = str(tmp_path / "m" / "m.admin.sock")

    def cli(*args: str) -> str:
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        host = json.loads(
            await loop.run_in_executor(None, cli, "device", "--socket", socket, "--json")
        )
        assert host["foreground"] is None and host["mobile_relay"] == "allowed"
        assert host["run_queue_wait"] is not None and host["fds_open"] > 0
        told = await loop.run_in_executor(
            None, cli, "device", "--socket", socket, "--foreground", "false", "--json"
        )
        host = json.loads(told)
        assert host["foreground"] is False and "background" in host["mobile_relay"]
        await loop.run_in_executor(None, node.wait_for, "mobile relay paused")
        status = json.loads(
            await loop.run_in_executor(None, cli, "status", "--socket", socket, "--json")
        )
        assert status["host"]["foreground"] is False
        # text, and the wrapper no longer says: unknown relays
        text = await loop.run_in_executor(
            None, cli, "device", "--socket", socket, "--foreground", "unknown"
        )
        rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line}
        assert rows["foreground"] == ["-"] and rows["mobile_relay"] == ["allowed"], text
        await loop.run_in_executor(None, node.wait_for, "mobile relay allowed")
        bad = await loop.run_in_executor(
            None, lambda: run_cli("device", "--socket", socket, "--foreground", "maybe")
        )
        assert bad.returncode == 2 and "invalid choice" in bad.stderr
    finally:
        node.kill()
