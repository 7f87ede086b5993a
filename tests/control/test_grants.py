"""Access grants on the control plane: the admin API and CLI, and each host's signed policy."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from accessfabric.control.client.client import ControlClient
from accessfabric.control.client.facts import HeartbeatFacts
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import MAX_GRANTS, MAX_RECORD_FLOORS, AccessPolicy
from accessfabric.control.kernel.rejections import RejectReason, SignedObjectRejected
from accessfabric.control.kernel.verify import verify_access_policy
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.cli import EXIT_USER, main
from accessfabric.control.server.grants import AccessGrants, GrantError
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import Running, running_plane


def _grants(tmp_path: Path) -> tuple[AccessGrants, Authority]:
    authority = Authority(NodeKey.generate())
    return AccessGrants(SqliteStore(tmp_path / "grants.db"), authority), authority


def test_a_hosts_policy_holds_its_tenants_live_grants_and_only_grows(tmp_path: Path) -> None:
    grants, authority = _grants(tmp_path)
    host, other = NodeKey.generate().node_id, NodeKey.generate().node_id
    empty = verify_access_policy(
        grants.policy_for(host, "acme"), authority.public_key, time.time(), host=host
    )
    assert empty.grants == () and empty.revision == 0
    web = grants.create("acme", ["web"], roles=[Role.MOBILE_EDGE], min_trust_tier=1)
    grants.create("other", ["web"])
    first = verify_access_policy(
        grants.policy_for(host, "acme"), authority.public_key, time.time(), host=host
    )
    assert [g.grant_id for g in first.grants] == [web.grant.grant_id]
    assert first.grants[0].classes == frozenset(TrafficClass)  # default: every class
    assert first.revision > empty.revision
    assert grants.revoke(web.grant_id).grant_id == web.grant_id
    blob = grants.policy_for(host, "acme")
    second = verify_access_policy(
        blob, authority.public_key, time.time(), host=host, min_revision=first.revision
    )
    assert second.grants == () and second.revision > first.revision
    with pytest.raises(SignedObjectRejected) as older:  # a replayed older policy
        verify_access_policy(
            authority.issue(first),
            authority.public_key,
            time.time(),
            host=host,
            min_revision=second.revision,
        )
    assert older.value.reason is RejectReason.STALE_EPOCH
    with pytest.raises(SignedObjectRejected) as foreign:  # another host's policy
        verify_access_policy(blob, authority.public_key, time.time(), host=other)
    assert foreign.value.reason is RejectReason.HOP_NOT_ON_ROUTE
    with pytest.raises(GrantError) as gone:
        grants.revoke(web.grant_id)
    assert gone.value.code == "unknown_grant"


def _record_calls(store: SqliteStore, method: str) -> list[str]:
    """Wrap ``store.<method>`` (one key or prefix argument): the list of what it was asked."""
    asked: list[str] = []
    real = getattr(store, method)

    def recording(key: str) -> object:
        asked.append(key)
        return real(key)

    setattr(store, method, recording)
    return asked


def test_a_sole_writer_reads_a_tenants_revision_once_per_change(tmp_path: Path) -> None:
    """With no other replica writing the store (SQLite), a heartbeat's policy check keeps
    the tenant's revision in memory: no store read per heartbeat (ADR 0043); its own
    writes (grant created, revoked, record floor raised) are seen at once."""
    store = SqliteStore(tmp_path / "grants.db")
    grants = AccessGrants(store, Authority(NodeKey.generate()), sole_writer=True)
    host = NodeKey.generate().node_id
    reads = _record_calls(store, "get")
    _, empty = grants.current_policy(host, "acme")
    for _ in range(50):
        assert grants.current_policy(host, "acme")[1] == empty
    assert len([k for k in reads if k.startswith("/grant-versions/")]) == 1
    web = grants.create("acme", ["web"])
    _, created = grants.current_policy(host, "acme")
    assert created > empty
    grants.revoke(web.grant_id)
    _, revoked = grants.current_policy(host, "acme")
    assert revoked > created
    grants.raise_floor("acme", NodeKey.generate().node_id, 2, int(time.time() * 1000) + 60_000, 1)
    assert grants.current_policy(host, "acme")[1] > revoked
    assert len([k for k in reads if k.startswith("/grant-versions/")]) == 4


def test_a_sole_writer_reads_a_tenants_grants_once_per_change(tmp_path: Path) -> None:
    """A start-up storm of new hosts (issue 17): each one's first policy is signed, but
    the tenant's grants are read from the store once per change, not once per host;
    a create or revoke is in the next host's policy at once."""
    store = SqliteStore(tmp_path / "grants.db")
    authority = Authority(NodeKey.generate())
    grants = AccessGrants(store, authority, sole_writer=True)
    ranges = _record_calls(store, "range")
    web = grants.create("acme", ["web"])
    ranges.clear()
    hosts = [NodeKey.generate().node_id for _ in range(20)]
    for host in hosts:
        grants.current_policy(host, "acme")
    assert ranges.count("/grants/acme/") == 1
    grants.revoke(web.grant_id)
    ranges.clear()
    for host in hosts:
        blob, _ = grants.current_policy(host, "acme")
        policy = verify_access_policy(blob, authority.public_key, time.time(), host=host)
        assert policy.grants == ()
    assert ranges.count("/grants/acme/") == 1


def test_bad_and_too_many_grants_are_refused(tmp_path: Path) -> None:
    grants, _ = _grants(tmp_path)
    for tenant, services in (("ACME", ["web"]), ("acme", []), ("acme", ["Web!"])):
        with pytest.raises(GrantError) as bad:
            grants.create(tenant, services)
        assert bad.value.code == "bad_grant"
    for index in range(MAX_GRANTS):
        grants.create("acme", [f"s{index}"])
    with pytest.raises(GrantError) as full:
        grants.create("acme", ["one-more"])
    assert full.value.code == "too_many_grants"


def test_admin_api_and_cli_create_list_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_admin_api_and_cli(tmp_path, capsys))


async def _admin_api_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_plane(tmp_path) as plane:
        server = ["--server", plane.url, "--admin-token", plane.admin_token]
        argv = ["control", "grant", "create", "--tenant", "acme", "--services", "rdp,ssh",
                "--roles", "mobile-edge", "--classes", "interactive", *server]  # fmt: skip
        assert await asyncio.to_thread(main, argv) == 0
        grant_id = capsys.readouterr().out.strip()
        assert len(grant_id) == 32
        assert await asyncio.to_thread(main, ["control", "grant", "list", *server]) == 0
        listing = capsys.readouterr().out
        assert (
            grant_id in listing
            and "mobile-edge" in listing
            and "rdp,ssh (interactive)" in (listing)
        )
        status, body = await plane.admin("GET", "/v1/admin/grants")
        assert status == 200 and body["grants"][0]["classes"] == ["interactive"]

        bad = ["control", "grant", "create", "--tenant", "acme", "--services", "rdp",
               "--roles", "pilot", *server]  # fmt: skip
        assert await asyncio.to_thread(main, bad) == EXIT_USER
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "unknown role 'pilot'" in error[0], error

        revoke = ["control", "grant", "revoke", grant_id, *server]
        assert await asyncio.to_thread(main, [*revoke, "--json"]) == 0
        revoked = json.loads(capsys.readouterr().out)
        assert revoked["grant_id"] == grant_id and revoked["time"].endswith("Z")
        assert await asyncio.to_thread(main, revoke) == EXIT_USER
        assert "unknown_grant" in capsys.readouterr().err
        status, body = await plane.admin("GET", "/v1/admin/grants")
        assert status == 200 and body["grants"] == []


def test_expired_grants_leave_the_policy_and_are_forgotten(tmp_path: Path) -> None:
    now = [time.time()]
    authority = Authority(NodeKey.generate())
    grants = AccessGrants(SqliteStore(tmp_path / "g.db"), authority, clock=lambda: now[0])
    host = NodeKey.generate().node_id
    short = grants.create("acme", ["web"], ttl=10)
    now[0] += 11
    policy = verify_access_policy(
        grants.policy_for(host, "acme"), authority.public_key, now[0], host=host
    )
    assert all(g.expires_ms > now[0] * 1000 for g in policy.grants)  # none that expired
    assert [s.grant_id for s in grants.all()] == [short.grant_id]  # kept until the next change
    grants.create("acme", ["ssh"])
    assert [sorted(s.grant.services) for s in grants.all()] == [["ssh"]]


def test_grants_name_nodes_of_their_own_tenant_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_grants_name_nodes(tmp_path, capsys))


async def _grants_name_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_plane(tmp_path) as plane:
        keys = {name: NodeKey.generate() for name in ("laptop", "host", "rival")}
        for name, tenant, roles in (("laptop", "acme", ["mobile-edge"]),
                                    ("host", "acme", ["service-host"]),
                                    ("rival", "globex", ["mobile-edge"])):  # fmt: skip
            client = plane.client(keys[name], tmp_path / name)
            try:
                await client.enroll(await plane.token(tenant, roles))
            finally:
                await client.close()
        laptop, host = keys["laptop"].node_id, keys["host"].node_id
        server = ["--server", plane.url, "--admin-token", plane.admin_token]
        argv = ["control", "grant", "create", "--tenant", "acme", "--services", "web",
                "--nodes", laptop, "--hosts", host, "--json", *server]  # fmt: skip
        assert await asyncio.to_thread(main, argv) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["nodes"] == [laptop] and created["hosts"] == [host]
        assert created["time"].endswith("Z")  # one --json printer for every answer
        for field, node in (
            ("nodes", keys["rival"]),
            ("hosts", keys["rival"]),
            ("nodes", NodeKey.generate()),
        ):  # another tenant's, unenrolled
            status, body = await plane.admin(
                "POST", "/v1/admin/grants",
                {"tenant": "acme", "services": ["web"], field: [node.node_id]},
            )  # fmt: skip
            assert status == 409 and body["error"]["code"] == "tenant_conflict", body
        # the grant holds on the named host only: another host's policy leaves it out
        other = NodeKey.generate().node_id
        mine = verify_access_policy(
            plane.plane.grants.policy_for(host, "acme"), plane.authority.public_key,
            time.time(), host=host,
        )  # fmt: skip
        assert [sorted(g.nodes) for g in mine.grants] == [[laptop]]
        theirs = verify_access_policy(
            plane.plane.grants.policy_for(other, "acme"), plane.authority.public_key,
            time.time(), host=other,
        )  # fmt: skip
        assert theirs.grants == ()


def test_the_heartbeat_carries_the_access_policy_only_when_it_changed(tmp_path: Path) -> None:
    asyncio.run(_policy_on_change(tmp_path))


async def _policy_on_change(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as plane:
        await plane.grant("acme", ["web"])
        key = NodeKey.generate()
        client = plane.client(key, tmp_path / "host")
        try:
            await _heartbeats(plane, client)
        finally:
            await client.close()


async def _heartbeats(plane: Running, client: ControlClient) -> None:
    await client.enroll(await plane.token("acme", ["service-host"]))
    facts = HeartbeatFacts(software_version="test", transports=("tcp_tls",))
    first = await client.heartbeat(facts)
    held = client.cached_access_policy()
    assert "access_policy" in first and held is not None
    sizes = []
    for _ in range(3):  # unchanged: the version only, no body
        reply = await client.heartbeat(facts)
        assert "access_policy" not in reply, reply.keys()
        assert reply["access_policy_version"] == first["access_policy_version"]
        sizes.append(len(json.dumps(reply)))
    assert client.cached_access_policy() == held  # the cached policy still holds
    body = len(first["access_policy"])  # ~260 bytes for one grant, ~6 KiB for 64
    assert max(sizes) <= len(json.dumps(first)) - body, (sizes, len(json.dumps(first)))
    await plane.grant("acme", ["ssh"])  # a change: the next reply carries it
    changed = await client.heartbeat(facts)
    assert "access_policy" in changed
    assert changed["access_policy_version"] > first["access_policy_version"]
    cached = client.cached_access_policy()
    assert cached is not None and cached[1] > held[1]
    assert "access_policy" not in await client.heartbeat(facts)


def test_record_floors_enter_the_policy_until_the_old_record_expires(tmp_path: Path) -> None:
    now = [time.time()]
    authority = Authority(NodeKey.generate())
    grants = AccessGrants(SqliteStore(tmp_path / "g.db"), authority, clock=lambda: now[0])
    host, node = NodeKey.generate().node_id, NodeKey.generate().node_id

    def policy() -> AccessPolicy:
        blob = grants.policy_for(host, "acme")
        return verify_access_policy(blob, authority.public_key, now[0], host=host)

    before = policy()
    grants.raise_floor("acme", node, 3, int((now[0] + 60) * 1000), int(now[0] * 1000) - 1)
    floored = policy()
    assert floored.floor_of(node) == 3 and floored.revision > before.revision
    now[0] += 200  # the old record expired (and the policy is re-signed): the floor is gone
    assert policy().record_floors == ()
    first_ms = int(now[0] * 1000) - 10_000  # superseded records issued in the past
    for i in range(MAX_RECORD_FLOORS):
        grants.raise_floor(
            "acme", NodeKey.generate().node_id, 2, int((now[0] + 60) * 1000), first_ms + i
        )
    assert grants.floor_plan("acme", node) == first_ms + 1  # full: the oldest is merged
    grants.raise_floor("acme", node, 2, int((now[0] + 60) * 1000), first_ms + 5000)
    merged = policy()
    assert len(merged.record_floors) == MAX_RECORD_FLOORS and merged.floor_of(node) == 2
    assert merged.tenant_floor_ms == first_ms + 1
    assert AccessPolicy.decode_body(merged.encode_body()) == merged


def test_a_fleets_first_policies_read_the_tenants_floors_once_per_revision(
    tmp_path: Path,
) -> None:
    """A fleet's start signs every host's first policy: the tenant's record floors are read
    from the store once per grant revision (a floor is written with its bump) and once
    more when one of them expires, not per host (issue 17, ADR 0056)."""
    now = [time.time()]
    store = SqliteStore(tmp_path / "g.db")
    authority = Authority(NodeKey.generate())
    grants = AccessGrants(store, authority, clock=lambda: now[0], sole_writer=True)
    node = NodeKey.generate().node_id
    grants.raise_floor("acme", node, 3, int((now[0] + 60) * 1000), int(now[0] * 1000) - 1)
    gets, ranges = _record_calls(store, "get"), _record_calls(store, "range")

    def floors_read() -> int:
        return len([k for k in gets if k.startswith("/tenant-record-floors/")]) + len(
            [k for k in ranges if k.startswith("/record-floors/")]
        )

    def first_policy() -> AccessPolicy:
        host = NodeKey.generate().node_id
        return verify_access_policy(
            grants.policy_for(host, "acme"), authority.public_key, now[0], host=host
        )

    assert all(first_policy().floor_of(node) == 3 for _ in range(50))
    assert floors_read() == 2, "one tenant-floor read, one floors range"
    other = NodeKey.generate().node_id
    grants.raise_floor("acme", other, 4, int((now[0] + 30) * 1000), int(now[0] * 1000) - 1)
    gets.clear(), ranges.clear()  # (raising a floor reads them too)
    floored = {node: 3, other: 4}
    assert all(dict(first_policy().record_floors) == floored for _ in range(50)), "raised"
    assert floors_read() == 2
    now[0] += 31  # the other's old record expired: no revision moved, its floor leaves
    assert all(dict(first_policy().record_floors) == {node: 3} for _ in range(50))
    assert floors_read() == 4


def test_a_floor_raised_by_another_replica_is_in_the_next_policy(tmp_path: Path) -> None:
    """Two control replicas on one store (``sole_writer=False``): one has cached the
    tenant's floors; the other raises a floor; the first one's next policy carries it,
    because the tenant's revision is read from the store per policy (ADR 0056)."""
    now = time.time()
    store = SqliteStore(tmp_path / "g.db")
    authority = Authority(NodeKey.generate())
    first = AccessGrants(store, authority, clock=lambda: now, sole_writer=False)
    second = AccessGrants(store, authority, clock=lambda: now, sole_writer=False)
    node, other = NodeKey.generate().node_id, NodeKey.generate().node_id
    first.raise_floor("acme", node, 3, int((now + 60) * 1000), int(now * 1000) - 1)

    def policy_of(grants: AccessGrants) -> AccessPolicy:
        host = NodeKey.generate().node_id
        return verify_access_policy(
            grants.policy_for(host, "acme"), authority.public_key, now, host=host
        )

    assert dict(policy_of(first).record_floors) == {node: 3}  # cached by the first
    second.raise_floor("acme", other, 4, int((now + 60) * 1000), int(now * 1000) - 1)
    assert dict(policy_of(first).record_floors) == {node: 3, other: 4}
