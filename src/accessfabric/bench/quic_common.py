"""What ``bench/quic_libs.py`` and the aiopquic benches share: constants and figures."""

from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"
MiB = 1 << 20
WINDOW = 64 * MiB
PIECE = 256 * 1024
BULK = b"B"
ECHO = b"E"
ED25519_SIGNATURE_ALGORITHM = 0x0807
SERVER_SEED = bytes(range(64, 96))


@dataclass(frozen=True, slots=True)
class LibraryFigures:
    library: str
    version: str
    bulk_mb_s: float
    rtt_us: float
    handshake_ms: float
    bulk_cpu_s: float = 0.0  # process CPU (all threads) while the bulk ran
    bulk_bytes: int = 0
    bulk_loop_cpu_s: float = 0.0  # the event loop's thread alone (aiopquic: without picoquic's)


def cpu_per_gib(figures: LibraryFigures, *, loop_only: bool = False) -> float:
    """CPU seconds per GiB of the bulk: the process (every thread), or the event loop's
    thread alone; 0 when not measured."""
    cpu = figures.bulk_loop_cpu_s if loop_only else figures.bulk_cpu_s
    if not cpu or not figures.bulk_bytes:
        return 0.0
    return cpu / (figures.bulk_bytes / (1 << 30))
