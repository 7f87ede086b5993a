"""Running as a systemd service: sd_notify over NOTIFY_SOCKET, and a unit systemd accepts."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.harness import COMMAND, command_env, keygen, run_cli


def _next_datagram(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_node_run_speaks_sd_notify(tmp_path: Path) -> None:
    keygen(tmp_path / "n.key")
    config = tmp_path / "n.toml"
    config.write_text('key_path = "n.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n')
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(30)
        env = {**command_env(), "NOTIFY_SOCKET": str(notify_path)}
        process = subprocess.Popen(
            [*COMMAND, "node", "run", "--config", str(config)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ready = _next_datagram(sock)
            assert ready.splitlines()[0] == "READY=1", ready
            assert "STATUS=node afn1" in ready
            # systemctl reload: SIGHUP; a changed key that needs a restart shows in STATUS
            config.write_text(
                'key_path = "n.key"\nroles = ["relay"]\n'
                '[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
            )
            process.send_signal(signal.SIGHUP)
            reloading = _next_datagram(sock)
            assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC="), reloading
            again = _next_datagram(sock)
            assert again.startswith("READY=1\n") and "needs a restart: roles" in again, again
            process.send_signal(signal.SIGTERM)
            assert _next_datagram(sock).startswith("STOPPING=1"), "no STOPPING=1"
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_service_install_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    keygen(tmp_path / "n.key")
    config = tmp_path / "edge.toml"
    config.write_text('key_path = "n.key"\ndrain_timeout = 15\n')
    units = tmp_path / "units"
    units.mkdir()
    done = run_cli("service", "install", "--config", str(config), "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    unit = units / "accessfabric-edge.service"
    assert f"wrote {unit}" in done.stdout
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert f"ExecStart={sys.executable} -m accessfabric node run --config {config}" in text
    assert "TimeoutStopSec=35" in text  # longer than drain_timeout
    assert "RestartPreventExitStatus=2" in text
    again = run_cli("service", "install", "--config", str(config), "--unit-dir", str(units),
                    "--json")  # fmt: skip
    assert json.loads(again.stdout)["path"] == str(unit), again.stderr
    printed = run_cli("service", "unit", "--config", str(config))
    assert printed.stdout == text
    bad = run_cli("service", "install", "--config", str(tmp_path / "no.toml"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit was checked by content only")
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    # the check is real: a misspelt directive is reported
    broken = units / "accessfabric-broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notfy"))
    verify = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "notfy" in verify.stderr
