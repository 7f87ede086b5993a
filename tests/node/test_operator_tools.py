"""version, completion, config check, health endpoints and process metrics (issue 20)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from tests.control.api_harness import running_plane
from tests.node.fake_servers import free_port
from tests.node.harness import COMMAND, command_env, keygen, run_cli


def test_version_names_commit_and_protocols() -> None:
    text = run_cli("version")
    assert text.returncode == 0
    assert text.stdout.startswith("accessfabric 0.")
    from accessfabric.session.config import SessionConfig

    versions = list(SessionConfig().versions)
    fabric = ",".join(str(v) for v in versions)
    assert f"protocols: fabric session v{fabric}, control API v1" in text.stdout
    document = json.loads(run_cli("version", "--json").stdout)
    assert document["protocols"] == {"fabric_session": versions, "control_api": "v1"}
    assert document["commit"] not in ("", None)  # a source checkout: git's commit


def test_completion_script_completes_commands(tmp_path: Path) -> None:
    done = run_cli("completion", "bash")
    assert done.returncode == 0, done.stderr
    script = tmp_path / "complete.sh"
    script.write_text(done.stdout)
    probe = (
        f"source {script}; COMP_WORDS=(accessfabric co); COMP_CWORD=1; "
        'COMP_LINE="accessfabric co"; COMP_POINT=${#COMP_LINE}; '
        '_shtab_accessfabric accessfabric co accessfabric; echo "${COMPREPLY[@]}"'
    )
    completed = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    offered = completed.stdout.split()
    assert {"control", "completion", "config"} <= set(offered), completed.stderr
    assert all(word.startswith("co") for word in offered), offered


def test_config_check(tmp_path: Path) -> None:
    node_id = keygen(tmp_path / "n.key")
    good = tmp_path / "good.toml"
    good.write_text('key_path = "n.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n')
    done = run_cli("config", "check", "--config", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: {good}: node {node_id}, 1 listener(s)")
    document = json.loads(run_cli("config", "check", "--config", str(good), "--json").stdout)
    assert document["ok"] is True and document["node_id"] == node_id

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'key_path = "missing.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
    )
    done = run_cli("config", "check", "--config", str(bad))
    assert done.returncode == 2 and "key_path" in done.stderr and "Traceback" not in done.stderr
    self_peer = tmp_path / "self.toml"
    self_peer.write_text(
        f'key_path = "n.key"\n[[peers]]\nnode_id = "{node_id}"\nendpoints = ["tcp://127.0.0.1:1"]\n'
    )
    done = run_cli("config", "check", "--config", str(self_peer), "--json")
    assert done.returncode == 2
    assert "own id" in json.loads(done.stdout)["errors"][0]
    idle = tmp_path / "idle.toml"
    idle.write_text('key_path = "n.key"\n')
    done = run_cli("config", "check", "--config", str(idle))
    assert done.returncode == 0 and "warning:" in done.stderr and "nothing to do" in done.stderr


async def test_node_health_endpoints_and_process_metrics(tmp_path: Path) -> None:
    NodeKey.generate().save(tmp_path / "n.key")
    port = free_port()
    path = tmp_path / "n.toml"
    path.write_text(
        f'key_path = "n.key"\nmetrics_listen = "127.0.0.1:{port}"\ndrain_timeout = 30\n'
        '[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        '[allow]\necho = ["*"]\n'  # default deny: the test's client has a fresh key
    )
    node = NodeRuntime(load_node_config(path))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def get(route: str) -> tuple[int, str]:
            async with http.get(base + route) as response:
                return response.status, await response.text()

        await node.start()
        shutdown: asyncio.Task[bool] | None = None
        try:
            assert await get("/healthz") == (200, "ok\n")
            assert await get("/readyz") == (200, "ready\n")
            unix = aiohttp.UnixConnector(path=str(node.config.admin_socket))
            async with (
                aiohttp.ClientSession(connector=unix) as admin,
                admin.get("http://node/readyz") as response,
            ):
                assert response.status == 200
            status, metrics = await get("/metrics")
            assert status == 200
            for name in ("process_resident_memory_bytes", "process_open_fds",
                         "python_gc_collections_total", "python_info",
                         'accessfabric_build_info{commit="'):  # fmt: skip
                assert name in metrics, name
            # draining: not ready (503), still alive
            local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
            bound = node.listeners[0].endpoint
            connection = await connect_tcp(
                local, "127.0.0.1", bound.port, expected_peer_id=node.node_id, timeout=5
            )
            stream = await connection.open_stream("echo")  # holds the drain open
            stream.write(b"x")
            assert await stream.readexactly(1) == b"x"
            shutdown = asyncio.create_task(node.shutdown())
            for _ in range(100):
                if (await get("/readyz"))[0] == 503:
                    break
                await asyncio.sleep(0.05)
            assert await get("/readyz") == (503, "not ready: draining\n")
            assert (await get("/healthz"))[0] == 200
            node.cut_drain_short()
            assert await shutdown is False
            connection.abort()
        finally:
            if shutdown is None:
                await node.shutdown()


async def test_control_plane_health_endpoints_and_build_info(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as cp:
        for route, expected in (("/healthz", "ok\n"), ("/readyz", "ready (store revision")):
            async with cp.http.get(cp.url + route) as response:
                assert response.status == 200
                assert (await response.text()).startswith(expected)
        async with cp.http.get(cp.url + "/metrics") as response:
            metrics = await response.text()
        assert "accessfabric_build_info{" in metrics and "process_cpu_seconds_total" in metrics
        cp.plane.store.close()  # the store is gone: not ready
        async with cp.http.get(cp.url + "/readyz") as response:
            assert response.status == 503
            assert (await response.text()).startswith("not ready: store:")


def test_friendly_names_in_status_and_logs(tmp_path: Path) -> None:
    from tests.node.harness import start_node

    home = start_node(tmp_path, "home", 'name = "home"')
    try:
        laptop = start_node(
            tmp_path, "laptop",
            f'name = "laptop"\n[[peers]]\nnode_id = "{home.node_id}"\nname = "home-server"\n'
            f'endpoints = ["{home.url}"]\nconnect = "always"\n',
        )  # fmt: skip
        try:
            assert laptop.wait_for("node starting")["name"] == "laptop"
            laptop.wait_for("peer session opened", peer=home.node_id)
            document = json.loads(
                run_cli("status", "--config", str(tmp_path / "laptop.toml"), "--json").stdout
            )
            assert document["node_name"] == "laptop"
            (session,) = document["sessions"]
            assert session["peer"] == home.node_id and session["name"] == "home-server"
            text = run_cli("status", "--config", str(tmp_path / "laptop.toml")).stdout
            assert text.startswith(f"node {laptop.node_id} (laptop)  up ")
            assert "home-server" in text
            assert laptop.terminate() == 0
        finally:
            laptop.kill()
        assert home.terminate() == 0
    finally:
        home.kill()


def test_bench_shows_progress_on_stderr_and_keeps_stdout_clean() -> None:
    done = run_cli("bench", "codec", "--quick", "--json", "--progress-interval", "0.5", timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["suite"] == "codec"  # stdout: the report only
    progress = [x for x in done.stderr.splitlines() if x.startswith("bench codec: ")]
    assert progress, done.stderr
    assert re.fullmatch(r"bench codec: \d+ s, DATA \d+ B", progress[0]), progress[0]


def _rfc3339(text: str) -> None:
    import datetime

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", text), text
    datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_print_answer_prints_the_document_with_its_time_or_the_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one printer the control CLI's answers and ``diag`` share."""
    from accessfabric.json_output import print_answer

    print_answer(True, {"grant_id": "g1"}, "ignored")
    document = json.loads(capsys.readouterr().out)
    assert document["grant_id"] == "g1"
    _rfc3339(document["time"])
    print_answer(False, {"grant_id": "g1"}, "revoked grant g1")
    assert capsys.readouterr().out == "revoked grant g1\n"


@pytest.mark.parametrize(
    "argv", [("status",), ("diag", "stream"), ("diag", "route", "web"), ("ping", "n"), ("device",)]
)
def test_admin_socket_commands_name_a_config_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """One admin_socket() finds the socket for status, diag, ping and device."""
    from accessfabric.cli import main

    missing = tmp_path / "none.toml"
    assert main([*argv, "--config", str(missing)]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error == [f"accessfabric {argv[0]}: {missing}: config file does not exist"], error


def test_json_output_of_commands_that_print(tmp_path: Path) -> None:
    from tests.node.harness import start_node

    node = start_node(tmp_path, "j")
    try:
        rows: list[tuple[tuple[str, ...], int, dict[str, object]]] = [
            (("keygen", "--out", str(tmp_path / "new.key"), "--json"), 0, {}),
            (("node", "id", "--key", str(tmp_path / "j.key"), "--json"), 0,
             {"node_id": node.node_id}),
            (("smoke", "--peer", node.url, "--peer-id", node.node_id, "--json"), 0,
             {"ok": True, "peer_node_id": node.node_id}),
            (("smoke", "--peer", node.url, "--peer-id", NodeKey.generate().node_id, "--json"), 5,
             {"ok": False, "exit_code": 5}),
            (("control", "init", "--data", str(tmp_path / "cp"), "--json"), 0, {}),
        ]  # fmt: skip
        for args, code, expected in rows:
            done = run_cli(*args)
            assert done.returncode == code, (args, done.stderr)
            document = json.loads(done.stdout)
            _rfc3339(document["time"])
            for key, value in expected.items():
                assert document[key] == value, (args, document)
        assert json.loads(run_cli("keygen", "--out", str(tmp_path / "x.key"), "--json").stdout)[
            "node_id"
        ].startswith("afn1")
        init = json.loads(
            run_cli("control", "init", "--data", str(tmp_path / "cp2"), "--json").stdout
        )
        assert init["authority_key"].startswith("afauth1") and init["admin_token"].startswith(
            "afadm1_"
        )
        assert node.terminate() == 0
    finally:
        node.kill()


def test_ping_a_peer_through_the_running_node(tmp_path: Path) -> None:
    from tests.node.harness import start_node

    home = start_node(tmp_path, "home")
    try:
        laptop = start_node(
            tmp_path, "laptop",
            f'[[peers]]\nnode_id = "{home.node_id}"\nname = "home"\n'
            f'endpoints = ["{home.url}"]\n',
        )  # fmt: skip
        try:
            config = str(tmp_path / "laptop.toml")
            done = run_cli("ping", "home", "--config", config, "--count", "2")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0] == f"ping {home.node_id} (home) via direct:"
            assert (
                lines[1] == f"  {laptop.node_id} -> {home.node_id}  tcp_tls 127.0.0.1:{home.port}"
            )
            assert re.fullmatch(r"ping 2: rtt \d+\.\d\d ms", lines[3]), lines
            document = json.loads(
                run_cli("ping", home.node_id, "--config", config, "--json").stdout
            )
            assert document["path"] == [laptop.node_id, home.node_id]
            assert len(document["ping_rtts_ms"]) == 3 and document["echo_rtt_ms"] > 0
            stranger = run_cli("ping", NodeKey.generate().node_id, "--config", config)
            assert stranger.returncode == 1 and "not a peer this node knows" in stranger.stderr
            assert laptop.terminate() == 0
        finally:
            laptop.kill()
        gone = run_cli("ping", "home", "--config", str(tmp_path / "laptop.toml"))
        assert gone.returncode == 3 and "no node is running" in gone.stderr
        assert home.terminate() == 0
    finally:
        home.kill()


def test_netcheck_reports_reachable_and_failing_endpoints(tmp_path: Path) -> None:
    from tests.node.harness import start_node

    home = start_node(tmp_path, "home")
    try:
        dead = free_port()
        keygen(tmp_path / "me.key")
        config = tmp_path / "me.toml"
        config.write_text(
            f'key_path = "me.key"\n[[peers]]\nnode_id = "{home.node_id}"\nname = "home"\n'
            f'endpoints = ["{home.url}", "tcp://127.0.0.1:{dead}"]\n'
        )
        done = run_cli("netcheck", "--config", str(config), "--timeout", "5")
        assert done.returncode == 0, done.stderr
        assert re.search(rf"ok    home +{home.url} +handshake [\d.]+ ms", done.stdout), done.stdout
        assert re.search(rf"FAIL  home +tcp://127.0.0.1:{dead} ", done.stdout), done.stdout
        assert f"nearest: home via {home.url}" in done.stdout
        report = json.loads(run_cli("netcheck", "--config", str(config), "--json").stdout)
        assert [row["ok"] for row in report["endpoints"]] == [True, False]
        assert home.terminate() == 0
        nothing = run_cli("netcheck", "--config", str(config), "--timeout", "2")
        assert nothing.returncode == 3, nothing.stdout
    finally:
        home.kill()


def test_forward_json_logs_parse(tmp_path: Path) -> None:
    """``--json`` on the long-running commands (forward, vpn up, node run): JSON log lines."""
    peer_id = NodeKey.generate().node_id
    process = subprocess.Popen(
        [*COMMAND, "forward", "--json", "--listen", "127.0.0.1:0", "--service", "x",
         "--peer", "tcp://127.0.0.1:1", "--peer-id", peer_id],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=command_env(),
    )  # fmt: skip
    try:
        assert process.stderr is not None
        events = []
        for raw in process.stderr:
            line = json.loads(raw)
            _rfc3339(line["ts"])
            events.append(line["event"])
            if line["event"] == "node ready":
                break
        assert "forward listening" in events
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
