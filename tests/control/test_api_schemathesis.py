"""Schemathesis against /openapi.json: no input produces a 5xx; responses match the schema.

The server runs on loopback in a thread.  Node endpoints are called as an enrolled node
(every generated request is signed by a ``requests`` auth hook over its exact bytes), admin
endpoints with the admin token, so generated data reaches the handlers rather than
stopping at authentication.  Bounded: ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.api.openapi import openapi_document
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.server import ControlServer
from accessfabric.control.server.store import SqliteStore
from accessfabric.identity.keys import NodeKey

MAX_EXAMPLES = 40
schema = schemathesis.openapi.from_dict(openapi_document())


class NodeSignature(requests.auth.AuthBase):
    """Signs the prepared request (method, path with query, body bytes) as a node."""

    def __init__(self, key: NodeKey) -> None:
        self.signer = RequestSigner(key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        assert request.method is not None
        request.headers.update(self.signer.headers(request.method, request.path_url, body))
        return request


class LiveServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.node = NodeKey.generate()
        self.url = ""
        self.admin_token = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.store = SqliteStore(self.directory / "control.db")
        self.plane = ControlPlane(self.store, Authority(NodeKey.generate()))
        self.admin_token = self.plane.admin.create()
        token = self.plane.registry.tokens.create("acme", ["entry", "relay", "service-host"], 3600)
        self.plane.registry.enroll(
            token.token, self.node.public_key_bytes, self.node.sealing_public_key_bytes
        )
        self.server = ControlServer(self.plane, "127.0.0.1", 0)
        await self.server.start()
        self.url = self.server.url

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        future.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.store.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("schemathesis"))
    server.thread.start()
    assert server.ready.wait(15)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def session(live: LiveServer) -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_input_produces_a_server_error(
    case: schemathesis.Case, live: LiveServer, session: requests.Session
) -> None:
    kwargs: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if case.path.startswith("/v1/admin/"):
        headers["Authorization"] = f"Bearer {live.admin_token}"
    elif case.path != "/v1/status":
        kwargs["auth"] = NodeSignature(live.node)
    case.call_and_validate(
        base_url=live.url,
        session=session,
        headers=headers,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        **kwargs,
    )


def test_the_signed_enroll_path_is_reachable(live: LiveServer, session: requests.Session) -> None:
    """A sanity check of the auth hook itself: a signed heartbeat is accepted."""
    response = session.post(
        live.url + "/v1/heartbeat", data=json.dumps({}), auth=NodeSignature(live.node)
    )
    assert response.status_code == 200, response.text
    key = NodeKey.generate()
    body = {
        "token": "aft1_0000000000000000_" + "a" * 52,
        "public_key": base64.b64encode(key.public_key_bytes).decode(),
        "sealing_public_key": base64.b64encode(key.sealing_public_key_bytes).decode(),
    }
    response = session.post(live.url + "/v1/enroll", data=json.dumps(body), auth=NodeSignature(key))
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_token"
