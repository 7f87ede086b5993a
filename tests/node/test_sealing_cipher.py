"""``[sealing] cipher``: ``auto`` picks AES-256-GCM where the CPU has AES instructions
(/proc/cpuinfo), ChaCha20-Poly1305 elsewhere; the runtime opens its streams with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, SealingConfig
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.stream_sealing import cpu_accelerates_aes, sealing_cipher
from accessfabric.sealing.records import CipherSuite

X86_AESNI = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce sse sse2 ssse3 pclmulqdq aes avx avx2
"""
X86_NO_AES = """processor\t: 0
flags\t\t: fpu vme de pse tsc msr pae mce sse sse2 ssse3 aes_like_but_not avx
"""
ARM64_CRYPTO = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
"""
ARM32_NO_CRYPTO = """processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt
"""


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "accelerated"),
    [
        (X86_AESNI, True),
        (X86_NO_AES, False),
        (ARM64_CRYPTO, True),
        (ARM32_NO_CRYPTO, False),
        ("", False),
    ],
    ids=["x86-aesni", "x86-without", "arm64-crypto", "armv7", "empty"],
)
def test_aes_acceleration_is_read_from_cpuinfo(
    tmp_path: Path, text: str, accelerated: bool
) -> None:
    assert cpu_accelerates_aes(_cpuinfo(tmp_path, text)) is accelerated


def test_no_cpuinfo_means_no_acceleration(tmp_path: Path) -> None:
    assert cpu_accelerates_aes(tmp_path / "missing") is False


def test_auto_follows_the_cpu_and_a_name_is_taken_as_is(tmp_path: Path) -> None:
    with_aes, without = _cpuinfo(tmp_path, X86_AESNI), tmp_path / "missing"
    assert sealing_cipher("auto", with_aes) is CipherSuite.AES_256_GCM
    assert sealing_cipher("auto", without) is CipherSuite.CHACHA20_POLY1305
    assert sealing_cipher("chacha20-poly1305", with_aes) is CipherSuite.CHACHA20_POLY1305
    assert sealing_cipher("aes-256-gcm", without) is CipherSuite.AES_256_GCM


@pytest.mark.parametrize("cipher", ["auto", "aes-256-gcm", "chacha20-poly1305"])
def test_the_runtime_opens_streams_with_the_configured_cipher(tmp_path: Path, cipher: str) -> None:
    config = NodeConfig(
        key_path=tmp_path / "n.key", cert_dir=tmp_path / "certs",
        sealing=SealingConfig(cipher=cipher),
    )  # fmt: skip
    runtime = NodeRuntime(config, key=NodeKey.generate())
    assert runtime.routes.sealing is not None
    assert runtime.routes.sealing.cipher is sealing_cipher(cipher)
