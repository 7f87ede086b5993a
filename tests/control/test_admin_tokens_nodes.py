"""``control token list|revoke`` and ``control remove-node`` against a real control API."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, running_plane
from tests.node.harness import run_cli


async def _cli(cp: Running, *args: str) -> subprocess.CompletedProcess[str]:
    call = functools.partial(run_cli, *args, "--server", cp.url, "--admin-token", cp.admin_token)
    return await asyncio.get_running_loop().run_in_executor(None, call)


def test_token_list_revoke_and_node_removal(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_token_list_revoke_and_node_removal(tmp_path), 120))


async def _token_list_revoke_and_node_removal(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as cp:
        first = await cp.token("acme", ["relay"])
        second = await cp.token("acme", ["entry"], uses=3)
        first_id, second_id = first.split("_")[1], second.split("_")[1]

        listing = await _cli(cp, "control", "token", "list")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[0].split() == [
            "TOKEN", "ID", "TENANT", "ROLES", "USES", "LEFT", "EXPIRES"
        ]  # fmt: skip
        assert first_id in listing.stdout and second_id in listing.stdout
        assert first.split("_")[2] not in listing.stdout  # never the secret
        document = json.loads((await _cli(cp, "control", "token", "list", "--json")).stdout)
        assert {t["token_id"] for t in document} == {first_id, second_id}
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["expires"]) for t in document)

        revoked = await _cli(cp, "control", "token", "revoke", first)  # the whole token works
        assert revoked.returncode == 0 and f"revoked token {first_id}" in revoked.stdout
        key = NodeKey.generate()
        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, first))
        assert status in (401, 403), reply  # a revoked token enrolls no one
        again = await _cli(cp, "control", "token", "revoke", first_id)
        assert again.returncode == 2 and "unknown_token" in again.stderr

        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, second))
        assert status in (200, 201), reply
        removed = await _cli(cp, "control", "remove-node", key.node_id)
        assert removed.returncode == 0, removed.stderr
        assert f"removed {key.node_id} (tenant acme, roles entry)" in removed.stdout
        nodes = await _cli(cp, "control", "nodes")
        assert nodes.stdout.strip() == "no nodes enrolled"
        status, reply = await cp.signed(key, "GET", "/v1/directory")
        assert status == 401 and reply["error"]["code"] == "unknown_node", reply
        gone = await _cli(cp, "control", "remove-node", key.node_id)
        assert gone.returncode == 2 and "not enrolled" in gone.stderr


def test_admin_node_paths_refuse_what_names_no_node(tmp_path: Path) -> None:
    """One path_node_id for every /v1/admin/nodes/{node_id} handler: 400 bad_node_id."""
    asyncio.run(asyncio.wait_for(_admin_node_paths_refuse(tmp_path), 60))


async def _admin_node_paths_refuse(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as cp:
        for method, path, body in (
            ("DELETE", "/v1/admin/nodes/not-a-node", None),
            ("POST", "/v1/admin/nodes/not-a-node/revoke-role", {"role": "relay"}),
            ("POST", "/v1/admin/nodes/not-a-node/drain", None),
            ("DELETE", "/v1/admin/nodes/not-a-node/drain", None),
        ):
            status, reply = await cp.admin(method, path, body)
            assert (status, reply["error"]["code"]) == (400, "bad_node_id"), (method, path)
        unknown = NodeKey.generate().node_id
        status, reply = await cp.admin("POST", f"/v1/admin/nodes/{unknown}/drain")
        assert (status, reply["error"]["code"]) == (404, "unknown_node")
