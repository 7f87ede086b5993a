"""``accessfabric bench hol``: interactive pings beside a saturating bulk stream on a slow link.

Two network namespaces (``a`` and ``b``, made and removed by the bench through
:class:`~accessfabric.sim.Topology`) are joined by a veth; what ``a`` sends is limited
with ``tc qdisc add dev IF root tbf rate 800mbit burst 256kb latency 50ms``.  A server
process in ``b`` and one client process per experiment in ``a``
(:mod:`accessfabric.bench.hol_peer`) talk over the namespaces' own addresses only.

Experiments, one after the other in one run:

* **fabric**: one authenticated session (TCP+TLS, default :class:`SessionConfig`)
  carrying a BULK stream that saturates the link and an INTERACTIVE stream pinging
  every 10 ms (application-level 16-byte echo);
* **fifo**: the same bulk and pings interleaved on one plain TCP connection;
* **separate**: bulk on one plain TCP connection, the pings on another;
* **idle**: the pings on a plain TCP connection with nothing else running;
* **stopped** / **paced**: as *fabric*, but the server's bulk reader stops after
  1 MiB / reads only 12 MiB/s (issue 13: a stopped or slow reader must not slow
  the streams beside it); *stopped* adds a second bulk stream, read normally,
  whose throughput is reported;
* **fabric-idle**: the pings on a fabric session with nothing else (the reference
  for the two above).

Reported: interactive RTT p50 / p99 and bulk throughput (as a share of the link rate).
Needs root and network namespaces; without them the suite says why and exits 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from accessfabric.bench.common import BenchNode, machine_note
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.percentile import percentile
from accessfabric.sim import Topology, netns_unavailable_reason

RATE = "800mbit"
LINK_BYTES_PER_S = 800e6 / 8
FABRIC_PORT = 7443
TCP_PORT = 7080
SERVER_SEED = bytes(range(64, 96))
CLIENT_SEED = bytes(range(96, 128))


def _peer_argv(role: str, host: str, cert_dir: Path, seed: bytes) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accessfabric.bench.hol_peer",
        role,
        "--host",
        host,
        "--fabric-port",
        str(FABRIC_PORT),
        "--tcp-port",
        str(TCP_PORT),
        "--cert-dir",
        str(cert_dir),
        "--seed",
        seed.hex(),
    ]


def _experiments(quick: bool) -> tuple[list[str], float]:
    modes = ["idle", "fabric-idle", "fabric", "stopped", "paced", "fifo", "separate"]
    return modes, (4.0 if quick else 10.0)


def run(quick: bool) -> BenchReport:
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"bench hol needs root and network namespaces: {reason}", file=sys.stderr)
        raise SystemExit(2)
    modes, seconds = _experiments(quick)
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="afhol-") as tmp, Topology(prefix="afhol") as topo:
        cert_dir = Path(tmp) / "tls"
        server_node = BenchNode.make(SERVER_SEED, cert_dir)
        server_node.server_ssl()  # certificate files exist before the processes start
        BenchNode.make(CLIENT_SEED, cert_dir).client_ssl()
        topo.add_host("a")
        topo.add_host("b")
        topo.link("a", "b")
        topo.set_rate("a", "b", rate=RATE, burst="256kb", latency="50ms")
        b_addr = topo.host_addr("b", "a")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        server = topo.popen(
            "b",
            _peer_argv("server", b_addr, cert_dir, SERVER_SEED),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert server.stdout is not None and server.stdin is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("hol server did not start")
        for mode in modes:
            argv = _peer_argv("client", b_addr, cert_dir, CLIENT_SEED)
            argv[4:4] = [mode]
            argv += ["--peer-id", server_node.key.node_id, "--seconds", str(seconds)]
            client = topo.popen("a", argv, stdout=subprocess.PIPE, env=env)
            out, _ = client.communicate(timeout=seconds + 60)
            if client.returncode != 0:
                raise RuntimeError(f"hol client {mode} failed with exit code {client.returncode}")
            results[mode] = json.loads(out)
        server.stdin.close()
        server.wait(5)
    return _report(results, seconds, quick)


def _report(results: dict[str, dict[str, object]], seconds: float, quick: bool) -> BenchReport:
    report = BenchReport("hol")

    def rtts(mode: str) -> list[float]:
        values = results[mode]["rtts_ms"]
        assert isinstance(values, list)
        return [float(v) for v in values]

    def rate(mode: str) -> float:
        nbytes = results[mode]["bulk_bytes"]
        elapsed = results[mode]["bulk_seconds"]
        assert isinstance(nbytes, int) and isinstance(elapsed, float)
        return nbytes / elapsed if elapsed else 0.0

    for q in (50, 99):
        fabric = percentile(rtts("fabric"), q / 100)
        for baseline, label in (("separate", "separate tcp connection"), ("fifo", "fifo one tcp")):
            report.add(
                BenchResult(
                    metric=f"fabric interactive RTT p{q}",
                    value=fabric,
                    unit="ms",
                    baseline_metric=f"{label} RTT p{q}",
                    baseline_value=percentile(rtts(baseline), q / 100),
                )
            )
    for q in (50, 99):
        report.add(
            BenchResult(
                metric=f"idle tcp RTT p{q}",
                value=percentile(rtts("idle"), q / 100),
                unit="ms",
                baseline_metric="(no load: reference)",
                baseline_value=percentile(rtts("idle"), q / 100),
            )
        )
    # beside a stopped reader a second bulk stream runs: the reference is bulk alone
    for mode, label, reference, reference_label in (
        ("stopped", "bulk + a stopped", "fabric", "fabric interactive beside bulk"),
        ("paced", "a 12 MiB/s paced", "fabric-idle", "idle fabric"),
    ):
        for q in (50, 99):
            report.add(
                BenchResult(
                    metric=f"fabric interactive RTT p{q} beside {label} bulk reader",
                    value=percentile(rtts(mode), q / 100),
                    unit="ms",
                    baseline_metric=f"{reference_label} RTT p{q}",
                    baseline_value=percentile(rtts(reference), q / 100),
                )
            )
    report.add(
        BenchResult(
            metric="fabric bulk MB/s beside a stopped bulk reader",
            value=rate("stopped") / 1e6,
            unit="MB/s",
            baseline_metric="fabric bulk MB/s alone",
            baseline_value=rate("fabric") / 1e6,
        )
    )
    report.add(
        BenchResult(
            metric="fabric bulk MB/s to a 12 MiB/s paced reader",
            value=rate("paced") / 1e6,
            unit="MB/s",
            baseline_metric="reader's pace",
            baseline_value=12 * 1024 * 1024 / 1e6,
        )
    )
    for mode, label in (("fabric", "fabric bulk"), ("separate", "separate tcp bulk")):
        report.add(
            BenchResult(
                metric=f"{label} MB/s",
                value=rate(mode) / 1e6,
                unit="MB/s",
                baseline_metric="link rate 800 Mbit/s",
                baseline_value=LINK_BYTES_PER_S / 1e6,
            )
        )
    report.add(
        BenchResult(
            metric="fifo tcp bulk MB/s",
            value=rate("fifo") / 1e6,
            unit="MB/s",
            baseline_metric="link rate 800 Mbit/s",
            baseline_value=LINK_BYTES_PER_S / 1e6,
        )
    )
    samples = ", ".join(f"{mode} {len(rtts(mode))}" for mode in results)
    report.notes["pings"] = f"every 10 ms, one outstanding; samples: {samples}"
    stuck = [mode for mode in results if results[mode].get("stuck")]
    if stuck:
        report.notes["stuck"] = (
            f"a ping never came back in: {', '.join(stuck)} (counted until the window ended)"
        )
    report.notes["window"] = f"{seconds:.0f} s measured after 1.5 s warm-up per experiment"
    p99 = percentile(rtts("fabric"), 0.99)
    share = rate("fabric") / LINK_BYTES_PER_S
    report.notes["targets"] = (
        f"interactive p99 <= 2 ms: {'met' if p99 <= 2.0 else 'not met'} ({p99:.2f} ms); "
        f"better than separate connection: "
        f"{'met' if p99 < percentile(rtts('separate'), 0.99) else 'not met'}; "
        f"bulk >= 90% of link: {'met' if share >= 0.9 else 'not met'} ({share:.1%})"
    )
    report.notes["machine"] = machine_note()
    return report
