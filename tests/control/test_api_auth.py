"""Authentication at the API: enrollment tokens, signed requests, replay, admin token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, running_plane
from tests.control.conftest import FakeClock


def _run(tmp_path: Path, body: Callable[[Running], Awaitable[None]], **kw: object) -> None:
    async def main() -> None:
        async with running_plane(tmp_path, **kw) as cp:  # type: ignore[arg-type]
            await body(cp)

    asyncio.run(main())


def test_enroll_refuses_bad_expired_and_used_up_tokens(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def body(cp: Running) -> None:
        key = NodeKey.generate()
        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, "aft1_nope"))
        assert (status, reply["error"]["code"]) == (401, "bad_token")
        token = await cp.token("acme", ["relay"], ttl=60, uses=1)
        forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, forged))
        assert (status, reply["error"]["code"]) == (401, "bad_token")
        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
        assert status == 200, reply
        assert reply["node_record"]["roles"] == ["relay"]
        other = NodeKey.generate()
        status, reply = await cp.signed(other, "POST", "/v1/enroll", enroll_body(other, token))
        assert (status, reply["error"]["code"]) == (401, "token_used_up")
        late = await cp.token("acme", ["relay"], ttl=60)
        clock.advance(61)
        status, reply = await cp.signed(other, "POST", "/v1/enroll", enroll_body(other, late))
        assert (status, reply["error"]["code"]) == (401, "token_expired")

    _run(tmp_path, body, clock=clock)


def test_enroll_needs_proof_of_the_key(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key, thief = NodeKey.generate(), NodeKey.generate()
        token = await cp.token("acme", ["relay"])
        # the thief signs a request enrolling someone else's public key
        headers = RequestSigner(thief).headers("POST", "/v1/enroll", enroll_body(key, token))
        headers["AF-Node"] = key.node_id
        async with cp.http.post(
            cp.url + "/v1/enroll", data=enroll_body(key, token), headers=headers
        ) as response:
            reply = await response.json()
        assert (response.status, reply["error"]["code"]) == (401, "bad_signature")
        status, reply = await cp.signed(thief, "POST", "/v1/enroll", enroll_body(key, token))
        assert (status, reply["error"]["code"]) == (401, "bad_node_id")
        # the token was not spent by the failed attempts
        status, _ = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
        assert status == 200

    _run(tmp_path, body)


def test_signed_requests_unsigned_stale_replayed_unknown(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def body(cp: Running) -> None:
        key = NodeKey.generate()
        await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, await cp.token("a", ["relay"])))
        async with cp.http.post(cp.url + "/v1/heartbeat", json={}) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unsigned"
        stranger = NodeKey.generate()
        status, reply = await cp.signed(stranger, "POST", "/v1/heartbeat", b"{}")
        assert (status, reply["error"]["code"]) == (401, "unknown_node")
        old = RequestSigner(key, clock=lambda: clock.now - 120)
        status, reply = await cp.signed(key, "POST", "/v1/heartbeat", b"{}", signer=old)
        assert (status, reply["error"]["code"]) == (401, "stale_timestamp")
        signer = RequestSigner(key, clock=clock)
        headers = signer.headers("POST", "/v1/heartbeat", b"{}")
        codes = []
        for _ in range(2):
            async with cp.http.post(
                cp.url + "/v1/heartbeat", data=b"{}", headers=headers
            ) as response:
                codes.append((response.status, (await response.json()).get("error")))
        assert codes[0] == (200, None)
        assert codes[1][0] == 401 and codes[1][1]["code"] == "replayed"
        # the signature covers the body and the path
        headers = signer.headers("POST", "/v1/heartbeat", b"{}")
        async with cp.http.post(
            cp.url + "/v1/heartbeat", data=b'{"x":1}', headers=headers
        ) as response:
            assert (await response.json())["error"]["code"] == "bad_signature"
        headers = signer.headers("GET", "/v1/directory", b"")
        async with cp.http.get(cp.url + "/v1/directory?x=1", headers=headers) as response:
            assert (await response.json())["error"]["code"] == "bad_signature"

    _run(tmp_path, body, clock=clock)


def test_admin_endpoints_need_the_admin_token(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        for headers in ({}, {"Authorization": "Bearer afadm1_0_x"}, {"Authorization": "Basic x"}):
            async with cp.http.get(cp.url + "/v1/admin/nodes", headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] in {
                    "admin_required",
                    "bad_admin_token",
                }
        status, reply = await cp.admin("GET", "/v1/admin/nodes")
        assert (status, reply) == (200, {"nodes": []})
        stored = [e.value for e in cp.plane.store.range("/admin/").entries]
        assert stored and all(cp.admin_token.encode() not in value for value in stored)

    _run(tmp_path, body)


def test_invalid_input_gets_a_clear_4xx(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        key = NodeKey.generate()
        await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, await cp.token("a", ["relay"])))
        cases: list[tuple[str, str, bytes, int, str]] = [
            ("POST", "/v1/heartbeat", b"not json", 400, "bad_json"),
            ("POST", "/v1/heartbeat", b"[]", 400, "bad_json"),
            ("POST", "/v1/heartbeat", b'{"pressure": {"cpu": 2}}', 400, "bad_facts"),
            ("POST", "/v1/heartbeat", b'{"peers": [{"node_id": "x"}]}', 400, "bad_facts"),
            ("POST", "/v1/heartbeat", b'{"device": {"battery_percent": NaN}}', 400, "bad_facts"),
            ("POST", "/v1/leases/route", b'{"service": "Bad Name"}', 400, "bad_field"),
            (
                "POST",
                "/v1/leases/route",
                b'{"service": "rdp", "traffic_class": 3}',
                400,
                "bad_field",
            ),
            ("POST", "/v1/leases/route", b'{"service": "rdp"}', 409, "source_not_live"),
            ("GET", "/v1/services/rdp/leases", b"", 404, "unknown_service"),
            ("POST", "/v1/services/rdp/replicas", b"{}", 403, "role_required"),
            ("POST", "/v1/heartbeat", b"{" + b" " * 300_000 + b"}", 413, "body_too_large"),
        ]
        for method, path, data, status, code in cases:
            got, reply = await cp.signed(key, method, path, data)
            assert (got, reply["error"]["code"]) == (status, code), (path, data[:40], reply)
            assert reply["error"]["message"]
        async with cp.http.get(cp.url + "/nope") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with cp.http.put(cp.url + "/v1/heartbeat") as response:
            assert response.status == 405
        status, reply = await cp.admin(
            "POST", "/v1/admin/tokens", {"tenant": "a", "roles": ["wizard"]}
        )
        assert status == 400 and "unknown role" in reply["error"]["message"]
        status, reply = await cp.admin(
            "POST", f"/v1/admin/nodes/{key.node_id}/revoke-role", {"role": "exit"}
        )
        assert (status, reply["error"]["code"]) == (409, "role_not_held")

    _run(tmp_path, body)


def test_openapi_schema_lists_every_route(tmp_path: Path) -> None:
    async def body(cp: Running) -> None:
        async with cp.http.get(cp.url + "/openapi.json") as response:
            schema = json.loads(await response.read())
        documented = {
            (method.upper(), path) for path, ops in schema["paths"].items() for method in ops
        }
        app = cp.server._runner.app
        routed = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
        routed.discard(("GET", "/openapi.json"))
        routed.discard(("GET", "/metrics"))  # Prometheus text, not part of the JSON API
        routed.discard(("GET", "/healthz"))  # plain-text probes for load balancers (issue 20)
        routed.discard(("GET", "/readyz"))
        assert documented == routed

    _run(tmp_path, body)
