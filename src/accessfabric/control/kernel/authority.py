"""``Authority``: the control plane's Ed25519 signing key and its key file.

The key file is a :class:`~accessfabric.identity.NodeKey` file (PEM PKCS#8, mode 0600,
written atomically, never overwritten); nodes pin :attr:`Authority.public_key_text`.
"""

from __future__ import annotations

import os
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.kernel.objects import AccessPolicy, NodeRecord, RouteLease, ServiceLease
from accessfabric.control.kernel.signed import encode_signed
from accessfabric.identity.keys import NodeKey


class Authority:
    """Signs node records, route leases and service leases."""

    def __init__(self, key: NodeKey) -> None:
        self._key = key

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Authority:
        """Generate a new authority key and write it to ``path`` (0600; refuses to overwrite).

        Raises :class:`~accessfabric.identity.IdentityError` naming the path on failure.
        """
        key = NodeKey.generate()
        key.save(path)
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Authority:
        """Read the key written by :meth:`create` (refuses group/world-readable files)."""
        return cls(NodeKey.load(path))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (what :func:`verify_route_lease` takes)."""
        return self._key.public_key_bytes

    @cached_property
    def public_key_text(self) -> str:
        """The public key as ``afauth1…`` text for node configuration files."""
        return format_authority_key(self._key.public_key_bytes)

    def sign(self, data: bytes) -> bytes:
        """A raw Ed25519 signature (the
        :class:`~accessfabric.control.kernel.signed.Signer` hook)."""
        return self._key.sign(data)

    def mac_private_key(self) -> X25519PrivateKey:
        """The control plane's X25519 heartbeat-MAC key: derived from the authority seed
        (the sealing-key derivation; the authority seals nothing else).  See
        :mod:`accessfabric.control.client.heartbeat_mac`."""
        return self._key.sealing_private_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign an X.509 certificate as issuer (the control API's TLS certificate, ADR 0017)."""
        return builder.sign(self._key.private_key, None)

    def issue(self, obj: NodeRecord | RouteLease | ServiceLease | AccessPolicy) -> bytes:
        """The signed blob of ``obj``."""
        return encode_signed(obj, self)

    def __repr__(self) -> str:
        return f"Authority({self.public_key_text!r})"
