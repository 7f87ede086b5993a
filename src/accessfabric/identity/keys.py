"""``NodeKey``: a node's Ed25519 private key, its key file, and what derives from it."""

from __future__ import annotations

import os
import stat
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.identity.errors import IdentityError
from accessfabric.identity.node_id import node_id_from_public_key
from accessfabric.identity.private_file import write_private_file
from accessfabric.identity.sealing_key import SEED_LENGTH, derive_sealing_private_key

MAX_KEY_FILE_SIZE = 16 * 1024
_INSECURE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO


class NodeKey:
    """A node's long-term identity: one Ed25519 private key (PEM PKCS#8, unencrypted, on disk).

    The node id and the X25519 sealing key are derived from it, so this one secret is all a
    node needs to keep.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """The key with this 32-byte Ed25519 seed (RFC 8032 private key); for tests and vectors."""
        if len(seed) != SEED_LENGTH:
            raise ValueError(f"Ed25519 seed must be {SEED_LENGTH} bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check_permissions: bool = True) -> NodeKey:
        """Read a key file written by :meth:`save`.

        Raises :class:`IdentityError` naming the path and the reason when the file is missing,
        unreadable, too large, readable or writable by group or others (unless
        ``check_permissions`` is false), not a PEM private key, encrypted, or not Ed25519.
        """
        data = _read_key_file(Path(path), check_permissions=check_permissions)
        return cls(_parse_private_key(path, data))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file atomically with mode 0600; refuse to replace an existing file."""
        try:
            write_private_file(path, self.private_key_pem(), overwrite=overwrite)
        except FileExistsError:
            raise IdentityError(
                path, "refusing to overwrite an existing key file (pass overwrite=True)"
            ) from None
        except OSError as exc:
            raise IdentityError(path, f"cannot write key file: {exc.strerror or exc}") from None

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PEM PKCS#8 (the key file format)."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The underlying ``cryptography`` key object (for X.509 signing)."""
        return self._private_key

    @cached_property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @cached_property
    def node_id(self) -> str:
        """This node's id (see :mod:`accessfabric.identity.node_id`)."""
        return node_id_from_public_key(self.public_key_bytes)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``data``."""
        return self._private_key.sign(data)

    def sealing_private_key(self) -> X25519PrivateKey:
        """The static X25519 key for end-to-end stream sealing, derived from the seed."""
        return derive_sealing_private_key(self._seed)

    @cached_property
    def sealing_public_key_bytes(self) -> bytes:
        """The raw 32-byte X25519 sealing public key."""
        return (
            self.sealing_private_key()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def __repr__(self) -> str:
        return f"NodeKey(node_id={self.node_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeKey):
            return NotImplemented
        return self.public_key_bytes == other.public_key_bytes

    def __hash__(self) -> int:
        return hash(self.public_key_bytes)


def _read_key_file(path: Path, *, check_permissions: bool) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IdentityError(path, "not a regular file")
            if check_permissions and info.st_mode & _INSECURE_MODE_BITS:
                raise IdentityError(
                    path,
                    f"key file permissions {stat.S_IMODE(info.st_mode):04o} are too open; "
                    f"run: chmod 600 {path}",
                )
            data = handle.read(MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError:
        raise IdentityError(path, "key file does not exist") from None
    except IsADirectoryError:
        raise IdentityError(path, "is a directory, not a key file") from None
    except PermissionError:
        raise IdentityError(path, "permission denied reading key file") from None
    except OSError as exc:
        raise IdentityError(path, f"cannot read key file: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_SIZE:
        raise IdentityError(path, f"too large for a key file (over {MAX_KEY_FILE_SIZE} bytes)")
    return data


def _parse_private_key(path: str | os.PathLike[str], data: bytes) -> Ed25519PrivateKey:
    if not data.strip():
        raise IdentityError(path, "key file is empty")
    if b"-----BEGIN" not in data:
        raise IdentityError(path, "not a PEM file (expected '-----BEGIN PRIVATE KEY-----')")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise IdentityError(
            path, "private key is encrypted; accessfabric key files are unencrypted PKCS#8"
        ) from None
    except UnsupportedAlgorithm:
        raise IdentityError(path, "private key uses an unsupported algorithm") from None
    except ValueError:
        raise IdentityError(path, "malformed PEM private key (expected PKCS#8 Ed25519)") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = _key_kind(key)
        raise IdentityError(path, f"holds a non-Ed25519 private key ({kind}); expected Ed25519")
    return key


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removesuffix("PrivateKey").removeprefix("_") or "unknown"
