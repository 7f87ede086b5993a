"""One exit-code convention across node, service and control commands (accessfabric.exit_codes).

Table-driven: each row is a command line, the exit code the convention gives it and a
fragment of the one line it prints on stderr (never a traceback).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from accessfabric.exit_codes import Exit
from tests.node.harness import keygen, run_cli


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("exit-codes")
    keygen(tmp / "n.key")
    (tmp / "n.toml").write_text('key_path = "n.key"\n')
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    (tmp / "busy.toml").write_text(
        f'key_path = "n.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:{port}"\n'
    )
    assert run_cli("control", "init", "--data", str(tmp / "control")).returncode == 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        yield {"tmp": str(tmp), "busy": str(port), "dead": str(dead)}
    finally:
        busy.close()
        closed.close()


ROWS: list[tuple[str, Exit, str]] = [
    # (command line with {tmp} {busy} {dead}, exit code, stderr fragment)
    ("keygen --out {tmp}/n.key", Exit.USAGE, "file exists; pass --force"),
    ("keygen --out {tmp}/no/such/dir/k.key", Exit.USAGE, "does not exist"),
    ("node run --config {tmp}/missing.toml", Exit.USAGE, "config file does not exist"),
    ("node id --key {tmp}/missing.key", Exit.USAGE, "does not exist"),
    ("node run --config {tmp}/busy.toml", Exit.FAILED, "cannot listen"),
    ("smoke --peer tcp://nowhere --peer-id afn1x", Exit.USAGE, "--peer"),
    ("forward --listen nohost --service s --config {tmp}/n.toml", Exit.USAGE, "nohost"),
    ("status --config {tmp}/missing.toml", Exit.USAGE, "config file does not exist"),
    ("status --socket {tmp}/none.sock", Exit.UNREACHABLE, "no node is running"),
    ("diag stream --socket {tmp}/none.sock", Exit.UNREACHABLE, "no node is running"),
    ("ping afn1x --config {tmp}/n.toml", Exit.UNREACHABLE, "no node is running"),
    ("device --socket {tmp}/none.sock", Exit.UNREACHABLE, "no node is running"),
    ("device --socket {tmp}/none.sock --foreground true", Exit.UNREACHABLE, "no node is running"),
    ("config check --config {tmp}/missing.toml", Exit.USAGE, "config file does not exist"),
    ("vpn up --config {tmp}/n.toml --dev af-a-very-long-name", Exit.USAGE, "names have 1 to 15"),
    ("vpn up --config {tmp}/n.toml --address 10.99.0.300/24", Exit.USAGE, "--address"),
    ("vpn up --config {tmp}/n.toml --route 10.0.0.1/24", Exit.USAGE, "did you mean 10.0.0.0/24"),
    ("control init --data {tmp}/control", Exit.USAGE, "already initialised"),
    ("control serve --data {tmp}/missing", Exit.USAGE, "missing"),
    ("control serve --data {tmp}/control --listen 127.0.0.1:{busy}", Exit.FAILED, "cannot listen"),
    ("control token create --tenant t --roles relay --admin-token x --server "
     "http://127.0.0.1:{dead}", Exit.UNREACHABLE, "cannot reach the control plane"),
    ("control nodes --server http://127.0.0.1:{dead}", Exit.USAGE, "no admin token"),
    ("node run --no-such-option", Exit.USAGE, "unrecognized arguments"),
    ("control nodes --no-such-option", Exit.USAGE, "unrecognized arguments"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "code", "fragment"), ROWS, ids=[r[0][:40] for r in ROWS])
def test_exit_code_convention(world: dict[str, str], line: str, code: Exit, fragment: str) -> None:
    args = line.format(**world).split()
    done = run_cli(*args)
    assert done.returncode == code, (line, done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    *before, last = lines
    if "unrecognized" not in fragment:  # argparse prints its usage line first
        # one line; a node that got as far as starting has logged before it (timestamped)
        assert all(re.match(r"\d{4}-\d\d-\d\dT", x) for x in before), done.stderr
        assert last.startswith("accessfabric "), done.stderr
    assert fragment in last, done.stderr
