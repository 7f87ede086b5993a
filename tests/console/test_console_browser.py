"""The admin console in a real browser, through the real ingress, over a real fleet.

Debian's chromium (Playwright) opens ``http://admin.example:<ingress>/`` on the entry
node's HTTP ingress; the console runs as the fabric service ``admin-console`` on two
service-host replicas.  Log in, see the five nodes healthy, open a route's score
reasons, watch a throughput chart move during a bulk transfer, create a token, then kill
the replica serving the page and reload: another replica answers within the service lease
TTL + 1 s and the login survives (the session cookie is valid at every replica).

``ACCESSFABRIC_CONSOLE_SCREENSHOTS=DIR`` also saves the main pages as PNGs (docs/).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.console.browser import chromium, require_chromium
from tests.console.fleet import SERVICE_LEASE_TTL, ConsoleFleet, start_fleet, wait_for

pytestmark = pytest.mark.slow
SCREENSHOTS = os.environ.get("ACCESSFABRIC_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    require_chromium()
    started = start_fleet(tmp_path_factory.mktemp("console-fleet"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def page(fleet: ConsoleFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with chromium(profile, ("admin.example", "web.example")) as context:
        tab = context.new_page()  # type: ignore[attr-defined]
        tab.set_default_timeout(20_000)
        yield tab


def base(fleet: ConsoleFleet) -> str:
    return f"http://admin.example:{fleet.ports['ingress-http']}"


def shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True)


def test_login_required_then_login(fleet: ConsoleFleet, page: Any) -> None:
    page.goto(base(fleet) + "/nodes")
    assert page.url.endswith("/login")  # nothing readable anonymously
    page.fill("input[name=token]", "afadm1_not_a_real_token")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "That is not an admin token."
    page.fill("input[name=token]", fleet.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url("**/nodes")
    assert page.locator("h1").inner_text() == "Nodes"


def test_nodes_page_shows_the_fleet_with_health(fleet: ConsoleFleet, page: Any) -> None:
    def all_healthy() -> bool:
        page.goto(base(fleet) + "/nodes")
        rows = page.locator("table.nodes tbody tr")
        seen = {}
        for index in range(rows.count()):
            row = rows.nth(index)
            node_id = row.locator("code.node-id").inner_text()
            seen[node_id] = row.locator(".health").inner_text()
        return set(seen) == set(fleet.ids.values()) and set(seen.values()) == {"healthy"}

    wait_for("every node healthy on the nodes page", all_healthy, timeout=30, step=0.5)
    entry_row = page.locator("table.nodes tbody tr", has_text=fleet.ids["entry"])
    assert "entry" in entry_row.inner_text()
    assert "tcp_tls" in entry_row.inner_text()  # capability facts: transports
    assert "protocol [1]" in entry_row.inner_text()  # versions
    assert page.locator("#drain-note").is_visible()
    shot(page, "nodes")


def test_route_score_reasons(fleet: ConsoleFleet, page: Any) -> None:
    def routes_shown() -> bool:
        page.goto(base(fleet) + "/routes")
        return page.locator("section.route", has_text="admin-console").count() > 0

    wait_for("entry's admin-console route on the routes page", routes_shown, step=0.5)
    section = page.locator("section.route", has_text="admin-console").first
    primary = section.locator("details.score").first
    assert "primary" in primary.locator("summary").inner_text()
    reasons = primary.locator("table.reasons")
    assert not reasons.is_visible()
    primary.locator("summary").click()
    assert reasons.is_visible()
    factors = reasons.locator("tbody tr td:first-child").all_inner_texts()
    assert "rtt" in factors, factors
    assert section.locator("details.score").count() >= 2  # an alternate is shown too
    shot(page, "routes")


def test_route_test_from_the_console_shows_each_hop(fleet: ConsoleFleet, page: Any) -> None:
    """The routes page's per-route test: the entry runs diag route through the relay."""
    page.goto(base(fleet) + "/routes")
    section = page.locator("section.route", has_text="admin-console").first
    section.locator("form.route-test button").click()
    page.wait_for_url("**/route-tests/*")
    page.locator('#route-test[data-state="done"]').wait_for(timeout=30_000)
    rows = page.locator("table.route-test tbody tr")
    assert rows.count() >= 2
    for index in range(rows.count()):
        row = rows.nth(index)
        assert row.locator(".ok").inner_text() == "yes", row.inner_text()
        hop1 = row.locator('li.hop-rtt[data-hop="1"]').inner_text()
        hop2 = row.locator('li.hop-rtt[data-hop="2"]').inner_text()
        assert " ms" in hop1 and "(ping)" in hop1, hop1
        assert " ms" in hop2 and "reported by" in hop2, hop2  # the relay's own measurement
    shot(page, "route-test")


def test_throughput_chart_moves_during_bulk_transfer(fleet: ConsoleFleet, page: Any) -> None:
    page.goto(base(fleet) + "/traffic")
    entry_chart = page.locator(f'figure.chart[data-key="node:{fleet.ids["entry"]}"]')
    entry_chart.wait_for()
    port = fleet.ports["ingress-http"]
    stop = threading.Event()

    def download() -> None:
        while not stop.is_set():
            subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "--limit-rate", "3M", "-m", "8",
                 "--resolve", f"web.example:{port}:127.0.0.1",
                 f"http://web.example:{port}/blob.bin"],
                check=False, timeout=20,
            )  # fmt: skip

    # web.example's streams are bulk (the ingress's classes table).
    line = entry_chart.locator('polyline[data-class="bulk"]')

    def moving_bps() -> float:
        item = entry_chart.locator('.legend .item[data-class="bulk"]')
        return float(item.get_attribute("data-bps") or 0) if item.count() else 0.0

    points_before = line.get_attribute("points") if line.count() else ""
    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    try:
        wait_for("entry's chart above 500 kB/s", lambda: moving_bps() > 500_000,
                 timeout=30, step=0.25)  # fmt: skip
        first = line.get_attribute("points")
        assert first != points_before
        updates = int(page.locator("body").get_attribute("data-traffic-updates") or 0)
        wait_for("two more chart updates without a reload",
                 lambda: int(page.locator("body").get_attribute("data-traffic-updates") or 0)
                 >= updates + 2, timeout=10)  # fmt: skip
        assert line.get_attribute("points") != first
        shot(page, "traffic")

        def web_stream_listed() -> bool:
            page.goto(base(fleet) + "/streams")
            rows = page.locator("table.streams tbody tr", has_text="web")
            return rows.count() > 0

        wait_for("the download's stream on the streams page", web_stream_listed, step=0.5)
        row = page.locator("table.streams tbody tr", has_text="web").first
        blocked = row.locator(".blocked").inner_text()
        assert blocked in ("-", "credit", "carrier", "pacing", "scheduler")
        shot(page, "streams")
    finally:
        stop.set()
        worker.join(30)


def test_create_token(fleet: ConsoleFleet, page: Any) -> None:
    page.goto(base(fleet) + "/tokens")
    page.fill("input[name=tenant]", "acme")
    page.check('input[name=roles][value="relay"]')
    page.click("form.token-form button[type=submit]")
    token = page.locator("#new-token").inner_text()
    assert token.startswith("afenr1_") or len(token) > 20, token
    events = fleet.admin("GET", "/v1/admin/events")["events"]
    assert any(e["kind"] == "token_created" and "relay" in e["detail"] for e in events)
    shot(page, "tokens")


def test_revoke_a_role(fleet: ConsoleFleet, page: Any) -> None:
    laptop = fleet.ids["laptop"]
    page.goto(base(fleet) + "/nodes")
    row = page.locator("table.nodes tbody tr", has_text=laptop)
    row.locator('button[title="revoke role mobile-edge"]').click()
    page.wait_for_url("**/nodes")
    row = page.locator("table.nodes tbody tr", has_text=laptop)
    assert row.locator("td").nth(1).inner_text().strip() == ""  # no role left
    nodes = {n["node_id"]: n for n in fleet.admin("GET", "/v1/admin/nodes")["nodes"]}
    assert nodes[laptop]["roles"] == []


def test_drain_and_undrain_a_node(fleet: ConsoleFleet, page: Any) -> None:
    laptop = fleet.ids["laptop"]

    def draining() -> bool:
        nodes = {n["node_id"]: n for n in fleet.admin("GET", "/v1/admin/nodes")["nodes"]}
        return bool(nodes[laptop]["draining"])

    page.goto(base(fleet) + "/nodes")
    row = page.locator("table.nodes tbody tr", has_text=laptop)
    assert row.locator(".draining").count() == 0
    row.locator("button.drain").click()
    page.wait_for_url("**/nodes")
    row = page.locator("table.nodes tbody tr", has_text=laptop)
    assert row.locator(".draining").inner_text() == "draining"
    assert draining()
    events = fleet.admin("GET", "/v1/admin/events")["events"]
    assert any(e["kind"] == "node_drained" and e["subject"] == laptop for e in events)
    row.locator("button.undrain").click()
    page.wait_for_url("**/nodes")
    row = page.locator("table.nodes tbody tr", has_text=laptop)
    assert row.locator(".draining").count() == 0 and row.locator("button.drain").count() == 1
    assert not draining()


def test_kill_the_serving_replica_and_reload(fleet: ConsoleFleet, page: Any) -> None:
    page.goto(base(fleet) + "/services")
    shot(page, "services")
    victim = page.locator("#served-by").inner_text()
    assert victim in ("host-a", "host-b"), victim
    fleet.kill(victim)
    killed = time.monotonic()
    deadline = killed + SERVICE_LEASE_TTL + 1
    served = ""
    while time.monotonic() < deadline:
        try:
            page.reload(timeout=max(1000, (deadline - time.monotonic()) * 1000))
            served = page.locator("#served-by").inner_text(timeout=2000)
        except PlaywrightError:  # a failed load is retried until the deadline
            served = ""
        if served and served != victim:
            break
        time.sleep(0.1)
    took = time.monotonic() - killed
    assert served and served != victim, f"no other replica answered within {took:.1f} s"
    assert page.locator("h1").inner_text() == "Services"  # still logged in
    page.goto(base(fleet) + "/events")
    lost = page.locator("#events tbody tr", has_text="replica_lost")
    lost.first.wait_for(timeout=15_000)  # the timeline refreshes itself every 3 s
    assert fleet.ids[victim] in lost.first.inner_text()
    shot(page, "events")
