"""Generate ``auth.json``: a worked AUTH exchange with the RFC 9266 ``tls-exporter`` binding.

    python tests/vectors/make_auth.py           # rewrite auth.json
    python tests/vectors/make_auth.py --check   # exit 1 if auth.json is stale

Everything is assembled here from docs/protocol.md and docs/identity.md with plain byte
packing, hashlib and the ``cryptography`` primitives -- not with accessfabric's session or
codec -- so the file checks the implementation instead of echoing it.  Deterministic:
fixed seeds, nonces and TLS exporter secret (Ed25519 signatures are deterministic).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

OUTPUT = Path(__file__).with_name("auth.json")

VERSION = 2
TRANSCRIPT_LABEL = b"accessfabric session v1 auth transcript"
DIALER_LABEL = b"accessfabric session v1 dialer signature"
ACCEPTOR_LABEL = b"accessfabric session v1 acceptor signature"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
CIPHER_SUITE = "TLS_AES_256_GCM_SHA384"
EXPORTER_SECRET = bytes(range(0x30, 0x60))  # 48 bytes: the SHA-384 suite's hash length

DIALER_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ACCEPTOR_SEED = bytes(32)
DIALER_NONCE = bytes([0x11]) * 32
ACCEPTOR_NONCE = bytes([0x22]) * 32


def lp(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(hashes.SHA384(), length, info).derive(secret)


def tls_exporter(secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 8446 §7.5 with an empty context, for a SHA-384 suite."""
    empty = hashlib.sha384(b"").digest()
    derived = hkdf_expand_label(secret, label, empty, 48)
    return hkdf_expand_label(derived, b"exporter", empty, length)


def node_id(public_key: bytes) -> str:
    """docs/identity.md: afn1 + base32(sha256(label || pk)[:20]) + CRC-20 checksum."""
    import base64

    body_bytes = hashlib.sha256(b"accessfabric node id v1" + public_key).digest()[:20]
    body = base64.b32encode(body_bytes).decode().lower()
    crc = 0
    for bit in (int(b) for byte in body_bytes for b in f"{byte:08b}"):
        top = (crc >> 19) & 1
        crc = (crc << 1) & 0xFFFFF
        if top ^ bit:
            crc ^= 0x80069  # g(x) without the x^20 term
    checksum_value = crc ^ 0xFFFFF
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    checksum = "".join(alphabet[(checksum_value >> s) & 31] for s in (15, 10, 5, 0))
    return "afn1" + body + checksum


def hello_frame(public_key: bytes, nonce: bytes, node: str) -> bytes:
    payload = (
        bytes([1])
        + VERSION.to_bytes(2, "big")
        + public_key
        + nonce
        + bytes([len(node)])
        + node.encode()
        + (0).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
    )
    header = len(payload).to_bytes(3, "big") + bytes([0x10, 0]) + (0).to_bytes(4, "big")
    return header + payload


def side(seed: bytes, nonce: bytes) -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    node = node_id(public)
    return {"seed": seed, "public_key": public, "node_id": node, "nonce": nonce, "key": key}


def build() -> dict[str, Any]:
    dialer, acceptor = side(DIALER_SEED, DIALER_NONCE), side(ACCEPTOR_SEED, ACCEPTOR_NONCE)
    for s in (dialer, acceptor):
        s["hello"] = hello_frame(s["public_key"], s["nonce"], s["node_id"])
    binding = tls_exporter(EXPORTER_SECRET, EXPORTER_LABEL, 32)
    transcript = hashlib.sha256(
        lp(TRANSCRIPT_LABEL) + lp(dialer["hello"]) + lp(acceptor["hello"]) + lp(binding)
    ).digest()
    out: dict[str, Any] = {
        "description": {
            "title": "AUTH with the RFC 9266 tls-exporter channel binding (protocol version 2)",
            "generator": "tests/vectors/make_auth.py (deterministic; do not edit by hand)",
            "spec": "docs/protocol.md#handshake, docs/identity.md#auth",
            "format": (
                "byte strings are lower-case hex, text is JSON strings. tls_exporter = "
                "TLS-Exporter(exporter_label, empty context, 32) derived from "
                "exporter_secret (the TLS 1.3 exporter_master_secret, as in an SSLKEYLOGFILE "
                "EXPORTER_SECRET line) with the suite's hash; transcript = sha256(lp(label) "
                "|| lp(dialer hello) || lp(acceptor hello) || lp(tls_exporter)), lp(x) = "
                "u32 big-endian length || x; each side's signed_message = its role label "
                "|| transcript (plain concatenation, the 32 raw digest bytes); signature = "
                "Ed25519(seed, signed_message), 64 bytes; auth_frame is the AUTH frame."
            ),
        },
        "version": VERSION,
        "cipher_suite": CIPHER_SUITE,
        "exporter_secret": EXPORTER_SECRET.hex(),
        "exporter_label": EXPORTER_LABEL.decode(),
        "tls_exporter": binding.hex(),
        "transcript_label": TRANSCRIPT_LABEL.decode(),
        "transcript": transcript.hex(),
    }
    roles = (("dialer", dialer, DIALER_LABEL), ("acceptor", acceptor, ACCEPTOR_LABEL))
    for name, s, label in roles:
        message = label + transcript
        signature = s["key"].sign(message)
        header = len(signature).to_bytes(3, "big") + bytes([0x11, 0]) + (0).to_bytes(4, "big")
        auth = header + signature
        out[name] = {
            "seed": s["seed"].hex(),
            "public_key": s["public_key"].hex(),
            "node_id": s["node_id"],
            "nonce": s["nonce"].hex(),
            "hello_frame": s["hello"].hex(),
            "role_label": label.decode(),
            "signed_message": message.hex(),
            "signature": signature.hex(),
            "auth_frame": auth.hex(),
        }
    return out


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render(build())
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
