"""``LocalEtcdCluster``: a real etcd cluster of N members on loopback, for tests, demo, bench.

Each member is a ``/usr/bin/etcd`` process with its own client and peer port (free
loopback ports) and data directory under one base directory.  Timings are shortened
(heartbeat 50 ms, election 500 ms) so a leader is re-elected within about a second and
the minimum lease TTL is one second.  :meth:`stop` kills every member it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ETCD_BINARY = "/usr/bin/etcd"
HEARTBEAT_MS = 50
ELECTION_MS = 500


def etcd_binary() -> str | None:
    """The etcd server binary, or ``None`` when it is not installed."""
    if os.access(ETCD_BINARY, os.X_OK):
        return ETCD_BINARY
    return shutil.which("etcd")


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """PEM files for TLS between clients and members (members verify client certificates)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def query(self) -> str:
        return f"?ca={self.ca}&cert={self.client_cert}&key={self.client_key}"


@dataclass(slots=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalEtcdCluster:
    """``size`` etcd members on 127.0.0.1 under ``base_dir``; start, kill members, stop."""

    def __init__(
        self, base_dir: str | os.PathLike[str], size: int = 3, *, tls: EtcdTls | None = None
    ) -> None:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError(
                "etcd is not installed; install it with: apt-get install etcd-server etcd-client"
            )
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.binary = binary
        self.base_dir = Path(base_dir)
        self.tls = tls
        self.token = f"af-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [
            EtcdMember(
                name=f"m{i}",
                client_port=_free_port(),
                peer_port=_free_port(),
                data_dir=self.base_dir / f"m{i}.etcd",
                scheme="https" if tls else "http",
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client port."""
        return [member.endpoint for member in self.members]

    @property
    def store_url(self) -> str:
        """The ``etcd://…`` URL of ``control serve --store`` (namespace: append ``/name``;
        with TLS, the query naming the CA and client certificate is :meth:`EtcdTls.query`)."""
        return "etcd://" + ",".join(self.endpoints)

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def start_member(self, member: EtcdMember, *, state: str = "new") -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        member.log = self.base_dir / f"{member.name}.log"
        argv = [
            self.binary,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.client_url,
            "--advertise-client-urls",
            member.client_url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster",
            self._initial_cluster(),
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
            "--quota-backend-bytes",
            str(256 * 1024 * 1024),
            "--logger",
            "zap",
            "--log-outputs",
            str(member.log),
        ]
        if self.tls is not None:
            argv += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        member.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self, *, timeout: float = 30.0) -> None:
        """Start every member and wait until the cluster has a leader and answers."""
        for member in self.members:
            self.start_member(member)
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, *, timeout: float = 30.0) -> None:
        """Wait until some running member answers with a leader; ``TimeoutError`` if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader() is not None:
                return
            for member in self.members:
                code = None if member.process is None else member.process.poll()
                if code is not None and code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                    raise RuntimeError(
                        f"etcd member {member.name} exited with {code}; see {member.log}"
                    )
            time.sleep(0.05)
        raise TimeoutError(f"etcd cluster at {self.endpoints} has no leader after {timeout} s")

    def member_ready(self, member: EtcdMember) -> bool:
        """``member`` answers on its client port and knows a leader."""
        import grpc

        from accessfabric.control.server.store.etcd_grpc import rpc_pb2, rpc_pb2_grpc

        if not member.running:
            return False
        with self._channel(member.endpoint) as channel:
            try:
                status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                    rpc_pb2.StatusRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
        return bool(status.leader)

    def wait_all_ready(self, *, timeout: float = 30.0) -> None:
        """Wait until every member answers and knows a leader (after restarts)."""
        deadline = time.monotonic() + timeout
        while not all(self.member_ready(member) for member in self.members):
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members {self.endpoints} not all ready")
            time.sleep(0.05)

    def leader(self) -> EtcdMember | None:
        """The member that is the raft leader now, or ``None`` (asked over its client port)."""
        import grpc

        from accessfabric.control.server.store.etcd_grpc import rpc_pb2, rpc_pb2_grpc

        for member in self.members:
            if not member.running:
                continue
            with self._channel(member.endpoint) as channel:
                stub = rpc_pb2_grpc.MaintenanceStub(channel)
                try:
                    status = stub.Status(rpc_pb2.StatusRequest(), timeout=0.5)
                except grpc.RpcError:
                    continue
                if status.leader == 0:
                    continue
                if status.leader == status.header.member_id:
                    return member
        return None

    def _channel(self, endpoint: str) -> Any:
        import grpc

        if self.tls is None:
            return grpc.insecure_channel(endpoint)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca.read_bytes(),
            private_key=self.tls.client_key.read_bytes(),
            certificate_chain=self.tls.client_cert.read_bytes(),
        )
        return grpc.secure_channel(endpoint, credentials)

    def kill(self, member: EtcdMember) -> None:
        """SIGKILL one member (its data dir stays; :meth:`restart` brings it back)."""
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait()

    def restart(self, member: EtcdMember) -> None:
        self.start_member(member, state="existing")

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after 2 s)."""
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.terminate()
        for member in self.members:
            if member.process is None:
                continue
            try:
                member.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()

    def __enter__(self) -> LocalEtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
