"""Control commands log like node commands: ``--log-json`` (RFC 3339 UTC), ``--log-level``."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
from pathlib import Path

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.identity.keys import NodeKey
from tests.node.harness import command_env, keygen, run_cli


def _first_json_line(process: subprocess.Popen[str], event: str) -> dict[str, object]:
    assert process.stderr is not None
    for raw in process.stderr:
        line = json.loads(raw)  # every stderr line is one JSON object
        if line["event"] == event:
            return dict(line)
    raise AssertionError(f"no {event!r} line")


def _rfc3339(text: object) -> None:
    assert isinstance(text, str) and text.endswith("Z"), text
    datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_control_serve_and_agent_log_json(tmp_path: Path) -> None:
    assert run_cli("control", "init", "--data", str(tmp_path / "cp")).returncode == 0
    serve = subprocess.Popen(
        [sys.executable, "-m", "accessfabric", "control", "serve", "--data", str(tmp_path / "cp"),
         "--listen", "127.0.0.1:0", "--log-json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=command_env(),
    )  # fmt: skip
    try:
        line = _first_json_line(serve, "control plane serving")
        _rfc3339(line["ts"])
        url = str(line["url"])
        assert line["level"] == "INFO" and url.startswith("https://127.0.0.1:")  # ADR 0017: TLS
        assert int(str(line["frozen"])) > 10_000  # start-up objects out of full GC passes
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(15) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        assert serve.stderr is not None
        serve.stderr.close()

    keygen(tmp_path / "a.key")
    authority = format_authority_key(NodeKey.generate().public_key_bytes)
    agent = run_cli(
        "control", "agent", "--server", "http://127.0.0.1:9", "--authority", authority,
        "--key", str(tmp_path / "a.key"), "--state", str(tmp_path / "state"), "--token", "t",
        "--log-json", "--log-level", "warning",
    )  # fmt: skip
    assert agent.returncode == 3, agent.stderr  # unreachable, as every command says it
    assert agent.stderr.count("\n") == 1 and "cannot reach" in agent.stderr
