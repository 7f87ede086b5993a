"""Real ``control serve --store etcd://…`` replica processes on the session's etcd cluster."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from accessfabric.control.kernel.authority_key import parse_authority_key
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from tests.control.test_api_cli import _env, _line, _run, _start
from tests.etcd_cluster import unique_namespace


@dataclass
class ReplicaProcesses:
    store_url: str
    namespace: str
    authority_text: str
    admin_token: str
    urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def authority_key(self) -> bytes:
        return parse_authority_key(self.authority_text)


def start_replicas(
    cluster: LocalEtcdCluster,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
    *,
    count: int = 2,
    heartbeat_interval: str = "1s",
    replica_ttl: str = "2s",
    members_per_replica: list[list[str]] | None = None,
) -> ReplicaProcesses:
    """``control init`` once, then ``count`` replicas, each with a copy of authority.key
    (``members_per_replica``: the etcd endpoints each replica is given; default all)."""
    namespace = unique_namespace()
    store_url = cluster.store_url + namespace
    first = tmp_path / "replica-0"
    init = _run("init", "--data", str(first), "--store", store_url)
    assert init.returncode == 0, init.stderr
    authority = re.search(r"afauth1[a-z2-7]+", init.stdout)
    admin = re.search(r"afadm1_[0-9a-f]+_[a-z2-7]+", init.stdout)
    assert authority and admin
    replicas = ReplicaProcesses(store_url, namespace, authority.group(0), admin.group(0))
    for index in range(count):
        data = tmp_path / f"replica-{index}"
        if index:  # how a replica gets the key: a copy of authority.key, mode 0600
            data.mkdir(mode=0o700)
            shutil.copy2(first / "authority.key", data / "authority.key")
        own_url = store_url
        if members_per_replica is not None:
            own_url = "etcd://" + ",".join(members_per_replica[index]) + namespace
        server = _start(
            "serve", "--data", str(data), "--store", own_url, "--listen", "127.0.0.1:0",
            "--heartbeat-interval", heartbeat_interval, "--replica-ttl", replica_ttl,
            "--insecure-http",  # loopback; the API's TLS is tested in test_api_tls_limits
            env=_env(),
        )  # fmt: skip
        started.append(server)
        replicas.processes.append(server)
        replicas.urls.append(_line(server, r"serving on (http://\S+)").group(1))
    return replicas
