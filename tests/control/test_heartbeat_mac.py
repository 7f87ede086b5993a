"""Heartbeats authenticated with AF-MAC (per-node X25519 session key, HMAC-SHA256).

Valid, tampered body, replay, wrong node, stale key after rotation, refused elsewhere,
the control key statement, and the client's fallback to Ed25519.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from accessfabric.control.client.heartbeat_mac import (
    ControlMacKey,
    MacKeyError,
    node_session_key,
    parse_mac_header,
)
from accessfabric.control.client.requestsig import RequestAuthError, RequestSigner
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, facts, running_plane

PATH = "/v1/heartbeat"


def _run(tmp_path: Path, body: Callable[[Running], Awaitable[None]]) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            await body(cp)

    asyncio.run(main())


async def _enroll(cp: Running, roles: list[str]) -> tuple[NodeKey, ControlMacKey, int]:
    key = NodeKey.generate()
    token = await cp.token("acme", roles)
    status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
    assert status == 200, reply
    control = ControlMacKey.from_json(reply["mac_key"], cp.authority.public_key)
    return key, control, int(reply["node_record"]["revision"])


async def _post(
    cp: Running, headers: dict[str, str], body: bytes, path: str = PATH
) -> tuple[int, Any]:
    async with cp.http.post(cp.url + path, data=body, headers=headers) as response:
        return response.status, json.loads(await response.read())


def _body(**fields: Any) -> bytes:
    return json.dumps(facts(**fields).to_json()).encode()


def _mac_headers(
    cp: Running, key: NodeKey, control: ControlMacKey, revision: int, body: bytes, path: str = PATH
) -> dict[str, str]:
    signer = cp.signers.setdefault(key.node_id, RequestSigner(key, clock=cp.plane.clock))
    session = node_session_key(key.sealing_private_key(), key.node_id, revision, control)
    return signer.mac_headers("POST", path, body, session, revision)


def test_valid_mac_heartbeat_is_ingested(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key, control, revision = await _enroll(cp, ["relay"])
        document = _body(region="eu")
        status, reply = await _post(
            cp, _mac_headers(cp, key, control, revision, document), document
        )
        assert status == 200, reply
        assert reply["health"] in {"healthy", "degraded"}
        assert "mac_key" not in reply  # only Ed25519 replies carry the statement
        state = cp.plane.heartbeats.get(key.node_id)
        assert state is not None and state.facts.region == "eu"

    _run(tmp_path, body)


def test_tampered_body_replay_and_wrong_node_are_refused(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key, control, revision = await _enroll(cp, ["relay"])
        other, _, other_revision = await _enroll(cp, ["relay"])
        document = _body(region="eu")
        headers = _mac_headers(cp, key, control, revision, document)
        status, reply = await _post(cp, headers, _body(region="us"))
        assert (status, reply["error"]["code"]) == (401, "bad_mac")
        status, reply = await _post(cp, headers, document)
        assert status == 200, reply
        status, reply = await _post(cp, headers, document)
        assert (status, reply["error"]["code"]) == (401, "replayed")
        # key's session key, presented as the other node's request
        headers = _mac_headers(cp, key, control, other_revision, document)
        headers["AF-Node"] = other.node_id
        status, reply = await _post(cp, headers, document)
        assert (status, reply["error"]["code"]) == (401, "bad_mac")
        # both schemes at once, or a garbled header
        headers = _mac_headers(cp, key, control, revision, document)
        headers["AF-Signature"] = "x" * 86
        status, reply = await _post(cp, headers, document)
        assert (status, reply["error"]["code"]) == (401, "ambiguous_auth")
        headers = _mac_headers(cp, key, control, revision, document)
        headers["AF-MAC"] = headers["AF-MAC"][:-2]
        status, reply = await _post(cp, headers, document)
        assert (status, reply["error"]["code"]) == (401, "bad_mac")

    _run(tmp_path, body)


def test_stale_key_after_rotation_then_ed25519_gives_the_new_revision(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key, control, revision = await _enroll(cp, ["entry", "relay"])
        status, reply = await cp.admin(
            "POST", f"/v1/admin/nodes/{key.node_id}/revoke-role", {"role": "entry"}
        )
        assert status == 200, reply
        document = _body()
        status, reply = await _post(
            cp, _mac_headers(cp, key, control, revision, document), document
        )
        assert (status, reply["error"]["code"]) == (401, "stale_mac_key")
        # the old key under the new revision number does not verify either
        stale = node_session_key(key.sealing_private_key(), key.node_id, revision, control)
        signer = cp.signers[key.node_id]
        headers = signer.mac_headers("POST", PATH, document, stale, revision + 1)
        status, reply = await _post(cp, headers, document)
        assert (status, reply["error"]["code"]) == (401, "bad_mac")
        # Ed25519 is still accepted and says which revision is current
        status, reply = await cp.signed(key, "POST", PATH, document)
        assert status == 200, reply
        new_revision = reply["node_record"]["revision"]
        assert new_revision == revision + 1
        assert reply["mac_key"] == control.to_json()
        status, reply = await _post(
            cp, _mac_headers(cp, key, control, new_revision, document), document
        )
        assert status == 200, reply

    _run(tmp_path, body)


def test_mac_is_refused_outside_heartbeats_and_at_enrollment(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key, control, revision = await _enroll(cp, ["service-host"])
        document = json.dumps({"mode": "active-active"}).encode()
        path = "/v1/services/rdp/replicas"
        status, reply = await _post(
            cp, _mac_headers(cp, key, control, revision, document, path), document, path
        )
        assert (status, reply["error"]["code"]) == (401, "mac_not_allowed")
        fresh = NodeKey.generate()
        token = await cp.token("acme", ["relay"])
        enroll = enroll_body(fresh, token)
        headers = _mac_headers(cp, fresh, control, 1, enroll, "/v1/enroll")
        status, reply = await _post(cp, headers, enroll, "/v1/enroll")
        assert (status, reply["error"]["code"]) == (401, "mac_not_allowed")

    _run(tmp_path, body)


def test_control_key_statement_must_be_signed_by_the_authority(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        statement = cp.plane.mac_keys.statement_json
        ControlMacKey.from_json(statement, cp.authority.public_key)
        with pytest.raises(MacKeyError):
            ControlMacKey.from_json(statement, NodeKey.generate().public_key_bytes)
        forged = dict(statement, public_key=statement["signature"][:44])
        with pytest.raises(MacKeyError):
            ControlMacKey.from_json(forged, cp.authority.public_key)
        with pytest.raises(MacKeyError):
            ControlMacKey.from_json("nope", cp.authority.public_key)

    _run(tmp_path, body)


def test_mac_header_parsing() -> None:
    assert parse_mac_header("7." + "A" * 43) == (7, bytes(32))
    for bad in ("", "7", "x." + "A" * 43, "7." + "A" * 42, "7." + "!" * 43, "1" * 21 + ".A"):
        with pytest.raises(RequestAuthError) as caught:
            parse_mac_header(bad)
        assert caught.value.code == "bad_mac"


class _CountingSigner(RequestSigner):
    """Notes how each request is authenticated: 'sig' (Ed25519) or 'mac'."""

    def __init__(self, key: NodeKey, cp: Running) -> None:
        super().__init__(key, clock=cp.plane.clock)
        self.seen: list[str] = []

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        self.seen.append("sig")
        return super().headers(method, path, body)

    def mac_headers(
        self, method: str, path: str, body: bytes, key: bytes, revision: int
    ) -> dict[str, str]:
        self.seen.append("mac")
        return super().mac_headers(method, path, body, key, revision)


def test_client_switches_to_mac_and_falls_back_after_rotation(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key = NodeKey.generate()
        token = await cp.token("acme", ["entry", "relay"])
        async with cp.client(key, tmp_path / "cache") as client:
            signer = _CountingSigner(key, cp)
            client._signer = signer
            await client.enroll(token)
            await client.heartbeat(facts())
            await client.heartbeat(facts())
            revoked = cp.plane.registry.revoke_role(key.node_id, Role.ENTRY)
            reply = await client.heartbeat(facts())  # stale key: refused, Ed25519 retry
            assert reply["node_record"]["revision"] == revoked.record.revision
            await client.heartbeat(facts())  # the new revision's key
            assert signer.seen == ["sig", "mac", "mac", "mac", "sig", "mac"]
            record = client.record()
            assert record is not None and Role.ENTRY not in record.roles

    _run(tmp_path, body)


def test_client_without_a_control_key_stays_on_ed25519(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key = NodeKey.generate()
        token = await cp.token("acme", ["relay"])
        async with cp.client(key, tmp_path / "cache") as client:
            signer = _CountingSigner(key, cp)
            client._signer = signer
            await client.enroll(token)
            client._control_mac_key = None  # e.g. a restarted node, before its first reply
            await client.heartbeat(facts())
            await client.heartbeat(facts())
            assert signer.seen == ["sig", "sig", "mac"]

    _run(tmp_path, body)
