"""Demo: the control plane on loopback (SQLite in the demo's directory) and role tokens."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from accessfabric.control.kernel.api_tls import AuthorityPin
from accessfabric.control.kernel.authority_key import parse_authority_key
from accessfabric.demo.procs import COMMAND, DemoFailed, Processes, env, free_port

HEARTBEAT_POLICY = "1s"
"""The control plane's heartbeat policy (the demo's nodes heartbeat faster still)."""


@dataclass
class Control:
    url: str
    admin_token: str
    authority: str
    urls: list[str] = field(default_factory=list)
    """Every replica (``demo --control etcd``); empty: just ``url``."""

    @property
    def pin(self) -> AuthorityPin:
        """aiohttp's ``ssl=``: the control API's certificate must be the authority's."""
        return AuthorityPin(parse_authority_key(self.authority))


def run_cli(*args: str) -> str:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env(), timeout=60)
    if done.returncode != 0:
        raise DemoFailed(f"accessfabric {' '.join(args[:3])}: {done.stderr.strip()}")
    return done.stdout


async def start_control(
    work: Path,
    procs: Processes,
    heartbeat_policy: str = HEARTBEAT_POLICY,
    extra: Sequence[str] = (),
) -> Control:
    """``control serve`` on loopback; ``heartbeat_policy``: its ``--heartbeat-interval``
    (nodes heartbeating slower are unreachable to it after 4.5 intervals); ``extra``:
    more ``control serve`` options."""
    data = work / "control"
    init = await asyncio.to_thread(run_cli, "control", "init", "--data", str(data))
    admin = re.search(r"afadm1_[a-z0-9_]+", init)
    authority = re.search(r"afauth1[a-z2-7]+", init)
    assert admin and authority, init
    port = free_port()
    procs.start(
        "control", [*COMMAND, "control", "serve", "--data", str(data), "--listen",
                    f"127.0.0.1:{port}", "--heartbeat-interval", heartbeat_policy, *extra],
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"  # TLS, pinned through the authority key
    deadline = time.monotonic() + 20
    while "serving on" not in procs.log("control"):
        if time.monotonic() > deadline or procs.children["control"].poll() is not None:
            raise DemoFailed("the control plane did not start:\n" + procs.tail("control"))
        await asyncio.sleep(0.1)
    print(f"    control plane {url}  store {data}/  authority {authority.group()[:20]}…")
    return Control(url, admin.group(), authority.group())


async def create_tokens(control: Control, roles: Iterable[str]) -> dict[str, str]:
    """One enrollment token per role, for as many nodes (the admin API of ``token create``)."""
    tokens: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        for role, uses in sorted(Counter(roles).items()):
            body = {"tenant": "demo", "roles": [role], "ttl_s": 3600, "uses": uses}
            async with client.post(
                f"{control.url}/v1/admin/tokens", json=body, headers=headers, ssl=control.pin
            ) as response:
                reply = await response.json()
                if response.status != 201:
                    raise DemoFailed(f"control token create --roles {role}: {reply}")
                tokens[role] = str(reply["token"])
    return tokens


async def create_grant(
    control: Control, tenant: str, services: Iterable[str], roles: Iterable[str] = ()
) -> str:
    """Admit ``tenant``'s nodes (holding one of ``roles``, if given) to ``services``: the
    admin API of ``control grant create`` (services are default deny)."""
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    body = {"tenant": tenant, "services": sorted(services), "roles": sorted(roles)}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.post(
            f"{control.url}/v1/admin/grants", json=body, headers=headers, ssl=control.pin
        ) as response,
    ):
        reply = await response.json()
        if response.status != 201:
            raise DemoFailed(f"control grant create --services {','.join(services)}: {reply}")
        return str(reply["grant_id"])
