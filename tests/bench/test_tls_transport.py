"""``bench tls`` moves every byte with each way of driving TLS, and the CPU readings hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from accessfabric.bench import tls_transport
from accessfabric.bench.common import BenchNode, process_cpu


@pytest.mark.parametrize("kind", tls_transport.KINDS)
def test_each_transport_moves_every_byte(kind: str, tmp_path: Path) -> None:
    BenchNode.make(tls_transport.SENDER_SEED, tmp_path).client_ssl()
    BenchNode.make(tls_transport.RECEIVER_SEED, tmp_path).server_ssl()
    # _transfer raises unless the receiver counted exactly the bytes sent.
    wall, sender_cpu, receiver_cpu = tls_transport._transfer(kind, 8 << 20, tmp_path)
    assert wall > 0
    assert sender_cpu >= 0 and receiver_cpu >= 0


def test_process_cpu_reads_proc_and_says_none_when_it_cannot() -> None:
    own = process_cpu(os.getpid())
    assert own is not None and own > 0
    assert process_cpu(None) is None
    assert process_cpu(2**22 + 12345) is None  # above Linux's pid_max: no such process
