"""A [[peers]] entry naming the node itself is an error; a node with nothing to do warns."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.node.harness import COMMAND, command_env, keygen, run_cli


def test_a_peer_with_the_nodes_own_id_is_an_error(tmp_path: Path) -> None:
    node_id = keygen(tmp_path / "n.key")
    config = tmp_path / "n.toml"
    config.write_text(
        'key_path = "n.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        f'[[peers]]\nnode_id = "{node_id}"\nendpoints = ["tcp://127.0.0.1:1"]\n'
    )
    for args in (
        ("node", "run", "--config", str(config)),
        ("forward", "--listen", "127.0.0.1:0", "--service", "x", "--config", str(config)),
    ):
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "peers[0].node_id: is this node's own id" in lines[0]
        assert node_id in lines[0] and str(config) in lines[0]


def test_a_node_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    keygen(tmp_path / "idle.key")
    config = tmp_path / "idle.toml"
    config.write_text('key_path = "idle.key"\n')
    process = subprocess.Popen(
        [*COMMAND, "node", "run", "--config", str(config)], env=command_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen: list[str] = []
        for line in process.stderr:
            seen.append(line)
            if "node ready" in line:
                break
        warnings = [x for x in seen if "WARNING" in x and "nothing to do" in x]
        assert len(warnings) == 1, seen
        assert "no [[listen]], [[peers]], [control]" in warnings[0]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
