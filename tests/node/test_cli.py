"""``accessfabric keygen`` / ``node id`` / ``node run`` user errors: one line, never a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from accessfabric.cli import main
from accessfabric.identity.keys import NodeKey
from tests.node.harness import run_cli


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_keygen_writes_0600_and_prints_the_node_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    assert main(["keygen", "--out", str(path)]) == 0
    node_id = capsys.readouterr().out.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load(path).node_id == node_id
    assert main(["node", "id", "--key", str(path)]) == 0
    assert capsys.readouterr().out.strip() == node_id


def test_keygen_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    main(["keygen", "--out", str(path)])
    first = capsys.readouterr().out.strip()
    assert main(["keygen", "--out", str(path)]) == 2
    one_line_error(capsys, "file exists", "--force")
    assert NodeKey.load(path).node_id == first
    assert main(["keygen", "--out", str(path), "--force"]) == 0
    assert capsys.readouterr().out.strip() != first
    assert main(["keygen", "--out", str(tmp_path / "missing" / "node.key")]) == 2
    one_line_error(capsys, "does not exist")


def test_node_id_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "id", "--key", str(tmp_path / "none.key")]) == 2
    one_line_error(capsys, "accessfabric node id:", "key file does not exist")
    loose = tmp_path / "loose.key"
    NodeKey.generate().save(loose)
    loose.chmod(0o644)
    assert main(["node", "id", "--key", str(loose)]) == 2
    one_line_error(capsys, "too open", "chmod 600")


def test_node_run_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "run", "--config", str(tmp_path / "none.toml")]) == 2
    one_line_error(capsys, "none.toml: config file does not exist")
    config = tmp_path / "node.toml"
    config.write_text('key_path = "node.key"\n[[peers]]\nnode_id = "afn1x"\nendpoints = []\n')
    assert main(["node", "run", "--config", str(config)]) == 2
    one_line_error(capsys, "node.toml: peers[0].node_id: bad node id length")
    config.write_text('key_path = "node.key"\n')
    assert main(["node", "run", "--config", str(config)]) == 2
    one_line_error(capsys, "node.key: key file does not exist")


def test_node_run_error_in_a_real_process(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('key_path = "k"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1"\n')
    result = run_cli("node", "run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{config}: listen[0].address: bad address" in result.stderr
