from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from accessfabric.identity import (
    IdentityError,
    NodeKey,
    node_id_from_public_key,
    verify_signature,
)

RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
# HKDF-SHA256(ikm=seed, salt=None, info=b"accessfabric x25519 sealing v1") -> X25519 public key
RFC8032_SEALING_PUBLIC = bytes.fromhex(
    "a4cc1a87797dbe8d10b74e028d369dab03e9780f581180b0ba7f69ecedf3e40a"
)


@pytest.fixture
def key() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_clean_message(error: IdentityError, path: Path) -> None:
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert error.path == str(path)
    assert error.reason and error.reason in message
    for leak in ("Traceback", "cryptography", "Could not deserialize", "ASN.1", "unsupported("):
        assert leak not in message
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None


def test_generate_gives_distinct_keys(key: NodeKey) -> None:
    other = NodeKey.generate()
    assert key.public_key_bytes != other.public_key_bytes
    assert len(key.public_key_bytes) == 32
    assert key.node_id == node_id_from_public_key(key.public_key_bytes)
    assert key != other
    assert key == NodeKey(key.private_key)


def test_repr_shows_node_id_not_secret(key: NodeKey) -> None:
    seed = key.private_key.private_bytes_raw()
    assert key.node_id in repr(key)
    assert seed.hex() not in repr(key)


def test_save_load_round_trip_mode_0600(tmp_path: Path, key: NodeKey, umask_zero: None) -> None:
    path = tmp_path / "node.key"
    key.save(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = NodeKey.load(path)
    assert loaded.public_key_bytes == key.public_key_bytes
    assert loaded.node_id == key.node_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]  # no temp file left


def test_save_creates_file_0600_from_the_start(
    tmp_path: Path, key: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    key.save(tmp_path / "node.key")
    creating = [call for call in calls if call[1] & os.O_CREAT]
    assert creating, calls
    for _, flags, mode in creating:
        assert flags & os.O_EXCL
        assert mode == 0o600


def test_refuses_to_overwrite(tmp_path: Path, key: NodeKey) -> None:
    path = tmp_path / "node.key"
    key.save(path)
    before = path.read_bytes()
    other = NodeKey.generate()
    with pytest.raises(IdentityError, match="refusing to overwrite") as info:
        other.save(path)
    _assert_clean_message(info.value, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]
    other.save(path, overwrite=True)
    assert NodeKey.load(path) == other
    assert _mode(path) == 0o600


def test_save_into_missing_directory(tmp_path: Path, key: NodeKey) -> None:
    path = tmp_path / "missing" / "node.key"
    with pytest.raises(IdentityError, match="cannot write key file") as info:
        key.save(path)
    _assert_clean_message(info.value, path)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_pem(key: NodeKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "key file is empty"),
        (b"\n \n", "key file is empty"),
        (b"hello world\n", "not a PEM file"),
        (b"\x00\xff" * 40, "not a PEM file"),
        (
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n",
            "malformed PEM private key",
        ),
        (b"-----BEGIN PRIVATE KEY-----\n", "malformed PEM private key"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed PEM"),
        (_ec_key_pem(), r"non-Ed25519 private key \(EC secp256r1\)"),
        (_encrypted_pem(NodeKey.generate()), "private key is encrypted"),
        (b"-----BEGIN" + b"A" * 20000, "too large for a key file"),
    ],
)
def test_malformed_key_file_messages(tmp_path: Path, content: bytes, reason: str) -> None:
    path = _write(tmp_path / "bad.key", content)
    with pytest.raises(IdentityError, match=reason) as info:
        NodeKey.load(path)
    _assert_clean_message(info.value, path)


def test_truncated_key_file(tmp_path: Path, key: NodeKey) -> None:
    pem = key.private_key_pem()
    path = _write(tmp_path / "cut.key", pem[: len(pem) // 2])
    with pytest.raises(IdentityError, match="malformed PEM private key") as info:
        NodeKey.load(path)
    _assert_clean_message(info.value, path)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="does not exist") as info:
        NodeKey.load(tmp_path / "absent.key")
    _assert_clean_message(info.value, tmp_path / "absent.key")
    with pytest.raises(IdentityError, match="directory") as info:
        NodeKey.load(tmp_path)
    _assert_clean_message(info.value, tmp_path)


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "fifo.key"
    os.mkfifo(path, 0o600)
    with pytest.raises(IdentityError, match="not a regular file"):
        NodeKey.load(path)


def test_unreadable_file(tmp_path: Path, key: NodeKey, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.key"
    key.save(path)

    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)  # root can read anything: simulate
    with pytest.raises(IdentityError, match="permission denied reading key file") as info:
        NodeKey.load(path)
    _assert_clean_message(info.value, path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_refuses_group_or_world_access(tmp_path: Path, key: NodeKey, mode: int) -> None:
    path = _write(tmp_path / "node.key", key.private_key_pem(), mode)
    with pytest.raises(IdentityError, match=f"permissions {mode:04o} are too open") as info:
        NodeKey.load(path)
    _assert_clean_message(info.value, path)
    assert NodeKey.load(path, check_permissions=False) == key


def test_sign_and_verify(key: NodeKey) -> None:
    signature = key.sign(b"message")
    assert len(signature) == 64
    assert verify_signature(key.public_key_bytes, b"message", signature)
    assert not verify_signature(key.public_key_bytes, b"messagE", signature)
    assert not verify_signature(NodeKey.generate().public_key_bytes, b"message", signature)
    assert not verify_signature(key.public_key_bytes, b"message", signature[:63])
    assert not verify_signature(key.public_key_bytes[:31], b"message", signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(key.public_key_bytes, b"message", tampered)


def test_from_seed_checks_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NodeKey.from_seed(b"\x00" * 31)


def test_sealing_key_vector_and_derivation() -> None:
    key = NodeKey.from_seed(RFC8032_SEED)
    assert key.sealing_public_key_bytes == RFC8032_SEALING_PUBLIC
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"accessfabric x25519 sealing v1"
    ).derive(RFC8032_SEED)
    assert key.sealing_private_key().private_bytes_raw() == expected


def test_sealing_key_is_deterministic_and_survives_the_key_file(
    tmp_path: Path, key: NodeKey
) -> None:
    key.save(tmp_path / "node.key")
    loaded = NodeKey.load(tmp_path / "node.key")
    assert loaded.sealing_public_key_bytes == key.sealing_public_key_bytes
    assert len(key.sealing_public_key_bytes) == 32
    assert key.sealing_public_key_bytes != key.public_key_bytes
    assert isinstance(key.sealing_private_key(), X25519PrivateKey)


def test_sealing_keys_agree_between_two_nodes(key: NodeKey) -> None:
    other = NodeKey.generate()
    ours = key.sealing_private_key().exchange(
        X25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key()
    )
    assert len(ours) == 32
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    a = key.sealing_private_key().exchange(
        X25519PublicKey.from_public_bytes(other.sealing_public_key_bytes)
    )
    b = other.sealing_private_key().exchange(
        X25519PublicKey.from_public_bytes(key.sealing_public_key_bytes)
    )
    assert a == b


def test_save_without_hard_links_still_refuses_and_is_private(
    tmp_path: Path, key: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "node.key"
    key.save(path)
    assert _mode(path) == 0o600
    assert NodeKey.load(path) == key
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        NodeKey.generate().save(path)
    assert NodeKey.load(path) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]
