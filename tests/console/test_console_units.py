"""Console sessions and CSRF tokens, the login limiter and ``[[ingress]]`` config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accessfabric.console.sessions import LOGIN_ATTEMPTS, LoginLimiter, SessionSigner
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.wire.registry import TrafficClass


def test_a_session_is_valid_at_every_replica_with_the_same_credential() -> None:
    cookie, session = SessionSigner("afadm1_same", 60).issue(now=1000)
    other = SessionSigner("afadm1_same", 60).check(cookie, now=1001)
    assert other is not None and other.csrf == session.csrf
    assert SessionSigner("afadm1_other", 60).check(cookie, now=1001) is None


def test_sessions_expire_and_forgeries_fail() -> None:
    signer = SessionSigner("afadm1_x", 60)
    cookie, _ = signer.issue(now=1000)
    assert signer.check(cookie, now=1059) is not None
    assert signer.check(cookie, now=1061) is None
    expires, nonce, mac = cookie.split(".")
    assert signer.check(f"{int(expires) + 3600}.{nonce}.{mac}", now=1001) is None
    assert signer.check("", now=1001) is None
    assert signer.check("x" * 1000, now=1001) is None


def test_login_limiter_is_per_client_and_bounded() -> None:
    limiter = LoginLimiter()
    for _ in range(LOGIN_ATTEMPTS):
        assert limiter.allowed("a", 0)
        limiter.failed("a", 0)
    assert not limiter.allowed("a", 1)
    assert limiter.allowed("b", 1)
    assert limiter.allowed("a", 61)
    for index in range(5000):
        limiter.failed(f"c{index}", 2)
    assert len(limiter._failures) <= 1024


def _config(tmp_path: Path, ingress: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'key_path = "k.key"\n{ingress}\n')
    return path


def test_ingress_config(tmp_path: Path) -> None:
    config = load_node_config(_config(tmp_path, """
[[ingress]]
listen = "127.0.0.1:0"
protocol = "https"
hosts = { "Admin.Example" = "admin-console", "web.example" = "web" }
classes = { "web.example" = "bulk" }
"""))  # fmt: skip
    (entry,) = config.ingress
    assert entry.hosts == {"admin.example": "admin-console", "web.example": "web"}
    assert entry.classes == {"web.example": TrafficClass.BULK}
    assert entry.protocol == "https"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('listen = "127.0.0.1:0"\nprotocol = "gopher"\nhosts = { a = "b" }', "ingress[0].protocol"),
        ('listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = {}', "ingress[0].hosts"),
        (
            'listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = { "-x" = "b" }',
            "ingress[0].hosts.-x",
        ),
        ('protocol = "http"\nhosts = { a = "b" }', "ingress[0].listen"),
        (
            'listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = { a = "b" }\nmax_header_bytes = 10',
            "ingress[0].max_header_bytes",
        ),
        (
            'listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = { a = "b" }\nport = 1',
            "ingress[0].port",
        ),
        (
            'listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = { a = "b" }\n'
            'classes = { c = "bulk" }',
            "ingress[0].classes.c",
        ),
        (
            'listen = "127.0.0.1:0"\nprotocol = "http"\nhosts = { a = "b" }\n'
            'classes = { a = "warp" }',
            "ingress[0].classes.a",
        ),
    ],
)
def test_ingress_config_errors_name_the_key(tmp_path: Path, body: str, where: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_node_config(_config(tmp_path, "[[ingress]]\n" + body))
    assert where in str(error.value)


def _serve(
    tmp_path: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    if token is not None:
        env["ACCESSFABRIC_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "accessfabric", "console", "serve", *args],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip


def test_console_serve_user_mistakes_are_one_line(tmp_path: Path) -> None:
    cases = [
        ((), None, "an admin token (afadm1_…) is needed"),
        (("--admin-token-file", str(tmp_path / "missing")), None, "--admin-token-file"),
        (("--listen", "nowhere"), "afadm1_x", "--listen"),
        (
            ("--tls-cert", str(tmp_path / "c.pem")),
            "afadm1_x",
            "--tls-cert and --tls-key go together",
        ),
    ]
    for args, token, message in cases:
        done = _serve(tmp_path, *args, token=token)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert message in done.stderr
