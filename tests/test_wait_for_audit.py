"""No new ``asyncio.wait_for`` without the audit (ADR 0067).

On Python 3.11 ``asyncio.wait_for`` can lose its caller's cancel (CPython gh-86296):
ADR 0067 went through every use and moved the ones where that keeps a task running to
``accessfabric.timeouts.wait_within``.  The uses it judged harmless are counted here
per file; a new one fails this test until it is ``wait_within`` or judged in the ADR's
table and counted here.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "accessfabric"

AUDITED = {
    "bench/abuse_attacker.py": 3,
    "bench/carrier.py": 3,
    "bench/carrier_extra.py": 1,
    "bench/hol_peer.py": 1,
    "bench/quic_aiopquic_carrier.py": 2,
    "bench/quic_two_process.py": 1,
    "bench/relay_peer.py": 1,
    "bench/tls_transport.py": 1,
    "carriers/https_fallback_client.py": 2,
    "carriers/quic_protocol.py": 1,
    "conformance/peer.py": 3,
    "conformance/runner.py": 1,
    "demo/traffic.py": 3,
    "node/admin/ping.py": 5,
    "node/admin/smoke.py": 4,
    "node/control_link.py": 1,
    "node/dialing/endpoints.py": 1,
    "services/tcp_forward.py": 1,
    "sim/fleet.py": 1,
    "sim/fleet_worker.py": 2,
}

_CALL = re.compile(r"\bwait_for\(")


def test_every_wait_for_is_audited() -> None:
    found = {}
    for path in SRC.rglob("*.py"):
        count = len(_CALL.findall(path.read_text()))
        if count:
            found[path.relative_to(SRC).as_posix()] = count
    new = {name: n for name, n in found.items() if n > AUDITED.get(name, 0)}
    assert not new, (
        f"asyncio.wait_for added in {new}: use accessfabric.timeouts.wait_within where a "
        "lost cancel would keep a task running (Python 3.11, ADR 0067), or judge it in "
        "ADR 0067's table and count it in tests/test_wait_for_audit.py"
    )
