"""The entry node's HTTP ingress with curl, and the console's refusals, over a real fleet.

``curl --resolve admin.example:PORT:127.0.0.1`` reaches the entry node's ``[[ingress]]``:
HTTP by ``Host``, HTTPS by SNI passed through to the console replica that holds the
certificate; an unknown name gets 421 (HTTP) or an ``unrecognized_name`` alert (HTTPS); a
name mapped to a service with no replica gets 503 / ``internal_error``; oversized, slow and
malformed heads are refused while a download through the same ingress runs on, intact.
The console refuses anonymous reads and cross-site or token-less actions.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from accessfabric.demo.procs import COMMAND
from tests.console.fleet import ConsoleFleet, start_fleet, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    started = start_fleet(tmp_path_factory.mktemp("ingress-fleet"))
    try:
        yield started
    finally:
        started.stop()


def curl(
    fleet: ConsoleFleet, url: str, *args: str, tls: bool = False
) -> subprocess.CompletedProcess[str]:
    port = fleet.ports["ingress-https" if tls else "ingress-http"]
    name = re.match(r"https?://([^/:]+)", url)
    assert name
    full = url.replace(name.group(1), f"{name.group(1)}:{port}", 1)
    return subprocess.run(
        ["curl", "-sS", "-m", "15", "--resolve", f"{name.group(1)}:{port}:127.0.0.1", *args, full],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def status_of(done: subprocess.CompletedProcess[str]) -> int:
    match = re.match(r"HTTP/1\.[01] (\d{3})", done.stdout)
    assert match, (done.stdout[:200], done.stderr)
    return int(match.group(1))


def test_http_by_host_reaches_the_console(fleet: ConsoleFleet) -> None:
    done = curl(fleet, "http://admin.example/login", "-i")
    assert status_of(done) == 200
    assert re.search(r'id="served-by">host-[ab]<', done.stdout)
    assert "content-security-policy:" in done.stdout.lower()


def test_https_by_sni_passes_tls_through_to_the_service_host(fleet: ConsoleFleet) -> None:
    assert fleet.cert is not None
    done = curl(fleet, "https://admin.example/login", "-i", "--cacert", str(fleet.cert), tls=True)
    assert done.returncode == 0, done.stderr
    assert status_of(done) == 200
    assert 'id="served-by">host-a-tls<' in done.stdout  # TLS ended at the console on host-a
    login = curl(
        fleet, "https://admin.example/login", "-i", "--cacert", str(fleet.cert),
        "-d", f"token={fleet.admin_token}", tls=True,
    )  # fmt: skip
    cookie = re.search(r"(?im)^set-cookie:.*$", login.stdout)
    assert cookie and "secure" in cookie.group(0).lower() and "httponly" in cookie.group(0).lower()


def test_unknown_host_is_refused_clearly(fleet: ConsoleFleet) -> None:
    done = curl(fleet, "http://unknown.example/", "-i")
    assert status_of(done) == 421
    assert "no service for host 'unknown.example'" in done.stdout
    tls = curl(fleet, "https://unknown.example/", "-k", tls=True)
    assert tls.returncode == 35
    assert "unrecognized name" in tls.stderr


def test_a_host_whose_service_has_no_replica(fleet: ConsoleFleet) -> None:
    done = curl(fleet, "http://ghost.example/", "-i")
    assert status_of(done) == 503
    assert "service 'ghost' unavailable" in done.stdout
    assert "no serving replica" in done.stdout
    tls = curl(fleet, "https://ghost.example/", "-k", tls=True)
    assert tls.returncode == 35
    assert "internal error" in tls.stderr


def _raw(fleet: ConsoleFleet, data: bytes, *, https: bool = False, wait: float = 15) -> bytes:
    port = fleet.ports["ingress-https" if https else "ingress-http"]
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_requests_are_refused_without_disturbing_a_running_download(
    fleet: ConsoleFleet,
) -> None:
    expected = hashlib.sha256((fleet.work / "site" / "blob.bin").read_bytes()).hexdigest()
    result: dict[str, str] = {}

    target = fleet.work / "download.bin"

    def download_to_file() -> None:
        done = curl(
            fleet,
            "http://web.example/blob.bin",
            "--limit-rate",
            "3M",
            "-m",
            "40",
            "-o",
            str(target),
        )
        result["code"] = str(done.returncode)

    worker = threading.Thread(target=download_to_file)
    worker.start()
    try:
        big = b"GET / HTTP/1.1\r\nHost: admin.example\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
        assert _raw(fleet, big).startswith(b"HTTP/1.1 431 ")
        assert _raw(fleet, b"BLAH\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert _raw(fleet, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # no Host
        two = b"GET / HTTP/1.1\r\nHost: admin.example\r\nHost: web.example\r\n\r\n"
        assert _raw(fleet, two).startswith(b"HTTP/1.1 400 ")
        slow_started = time.monotonic()
        assert _raw(fleet, b"GET / HTTP/1.1\r\nHost: adm").startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - slow_started < 10  # header_timeout = 3 s
        alert = _raw(fleet, b"\x16\x03\x01\x00\x05hello-not-tls" * 3, https=True)
        assert alert[:1] == b"\x15" and alert[-1] == 50  # fatal decode_error
        assert worker.is_alive(), "the download should still be running"
    finally:
        worker.join(60)
    assert result.get("code") == "0"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected


def test_console_refuses_anonymous_reads(fleet: ConsoleFleet) -> None:
    for path in ("/nodes", "/routes", "/events", "/static/console.js"):
        done = curl(fleet, f"http://admin.example{path}", "-i")
        assert status_of(done) == 303, path
        assert re.search(r"(?im)^location: /login", done.stdout), path
    for path in ("/api/traffic", "/api/events"):
        assert status_of(curl(fleet, f"http://admin.example{path}", "-i")) == 401
    forged = curl(fleet, "http://admin.example/api/traffic", "-i",
                  "-b", "af_console=9999999999.00ff.deadbeef")  # fmt: skip
    assert status_of(forged) == 401
    assert status_of(curl(fleet, "http://admin.example/tokens", "-i", "-d", "tenant=x")) == 401


def test_console_refuses_cross_site_and_token_less_actions(fleet: ConsoleFleet) -> None:
    jar = fleet.work / "jar.txt"
    login = curl(fleet, "http://admin.example/login", "-i", "-c", str(jar),
                 "-d", f"token={fleet.admin_token}")  # fmt: skip
    assert status_of(login) == 303
    page = curl(fleet, "http://admin.example/tokens", "-b", str(jar))
    csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.stdout)
    assert csrf, page.stdout[:300]
    form = ["-d", "tenant=acme", "-d", "roles=relay", "-d", f"csrf={csrf.group(1)}"]
    cross = curl(fleet, "http://admin.example/tokens", "-i", "-b", str(jar), *form,
                 "-H", "Origin: http://evil.example")  # fmt: skip
    assert status_of(cross) == 403
    fetch = curl(fleet, "http://admin.example/tokens", "-i", "-b", str(jar), *form,
                 "-H", "Sec-Fetch-Site: cross-site")  # fmt: skip
    assert status_of(fetch) == 403
    no_csrf = curl(fleet, "http://admin.example/tokens", "-i", "-b", str(jar),
                   "-d", "tenant=acme", "-d", "roles=relay")  # fmt: skip
    assert status_of(no_csrf) == 403
    before = len(fleet.admin("GET", "/v1/admin/events")["events"])
    ok = curl(fleet, "http://admin.example/tokens", "-i", "-b", str(jar), *form,
              "-H", f"Origin: http://admin.example:{fleet.ports['ingress-http']}")  # fmt: skip
    assert status_of(ok) == 200 and 'id="new-token"' in ok.stdout
    kinds = [e["kind"] for e in fleet.admin("GET", "/v1/admin/events")["events"][before:]]
    assert kinds == ["token_created"]  # only the accepted action created a token
    drain = f"http://admin.example/nodes/{fleet.ids['laptop']}/drain"
    no_csrf_drain = curl(fleet, drain, "-i", "-b", str(jar), "-d", "undrain=0")
    cross_drain = curl(fleet, drain, "-i", "-b", str(jar), "-d", f"csrf={csrf.group(1)}",
                       "-H", "Origin: http://evil.example")  # fmt: skip
    assert status_of(no_csrf_drain) == 403 and status_of(cross_drain) == 403
    nodes = {n["node_id"]: n for n in fleet.admin("GET", "/v1/admin/nodes")["nodes"]}
    assert not nodes[fleet.ids["laptop"]]["draining"]  # neither drained it


def diag(fleet: ConsoleFleet, *args: str) -> tuple[int, dict[str, Any]]:
    socket_path = fleet.work / "entry.admin.sock"
    done = subprocess.run(
        [*COMMAND, "diag", *args, "--socket", str(socket_path), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def test_diag_route_probes_the_primary_and_each_alternate(fleet: ConsoleFleet) -> None:
    code, report = diag(fleet, "route", "admin-console")
    assert code == 0, report
    routes = report["routes"]
    assert len(routes) >= 2
    hosts = {fleet.ids["host-a"], fleet.ids["host-b"]}
    for route in routes:
        assert route["ok"], route
        assert route["hops"][0] == fleet.ids["entry"] and route["hops"][-1] in hosts
        assert len(route["hop_rtt_ms"]) == 2 and route["end_to_end_ms"] > 0
        assert route["ping_loss"] == 0 and route["failing_hop"] is None
        # through the relay: hop 2 (relay -> host) as the relay measures its own session
        assert route["hops"][1] == fleet.ids["relay"], route
        assert route["hop_rtt_source"][0] == "ping", route
        assert route["hop_rtt_source"][1].startswith("reported by"), route
        assert route["hop_rtt_ms"][1] > 0 and route["beyond_hop1_ms"] is not None, route
    code, burst = diag(fleet, "route", "web", "--class", "bulk", "--burst", "32768")
    assert code == 0, burst
    assert all(r["burst_mbps"] and r["burst_mbps"] > 0 for r in burst["routes"]), burst


def test_diag_stream_shows_a_live_download(fleet: ConsoleFleet) -> None:
    port = fleet.ports["ingress-http"]
    download = subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "--limit-rate", "2M", "-m", "20",
         "--resolve", f"web.example:{port}:127.0.0.1", f"http://web.example:{port}/blob.bin"],
    )  # fmt: skip
    try:

        def web_stream() -> dict[str, Any] | None:
            _, report = diag(fleet, "stream")
            rows = [s for s in report["streams"] if s["service"] == "web" and s["bytes_in"] > 0]
            return rows[0] if rows else None

        row = wait_for("a web stream with bytes in diag stream", web_stream, timeout=20)
        assert row["class"] == "bulk"  # the ingress's classes table names web.example's class
        assert row["blocked"] in ("-", "credit", "carrier", "pacing", "scheduler")
        assert row["rtt_ms"] is not None and row["credit"] >= 0
    finally:
        download.kill()
        download.wait()


def test_diag_route_names_the_failing_hop(fleet: ConsoleFleet) -> None:
    """Last in the module: host-b dies; its route fails beyond the relay, the other works."""
    fleet.kill("host-b")
    code, report = diag(fleet, "route", "admin-console")
    by_host = {fleet.name_of(r["hops"][-1]): r for r in report["routes"]}
    assert by_host["host-a"]["ok"], report
    dead = by_host["host-b"]
    assert not dead["ok"] and dead["failing_hop"] == 2, dead
    assert dead["error"].startswith("beyond hop 1"), dead
    assert code == 0  # one route still works
