"""Server-rendered HTML of the console's pages: plain strings, every value escaped."""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any

NAV = (
    ("/nodes", "Nodes"),
    ("/routes", "Routes"),
    ("/services", "Services"),
    ("/traffic", "Traffic"),
    ("/streams", "Streams"),
    ("/relays", "Relays"),
    ("/events", "Events"),
    ("/tokens", "Tokens"),
)
ROLES = ("mobile-edge", "entry", "relay", "service-host", "control")


def h(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def short(node_id: str) -> str:
    return node_id[:14] + "…" if len(node_id) > 15 else node_id


def node_ref(node_id: str, names: dict[str, str] | None = None) -> str:
    label = (names or {}).get(node_id) or short(node_id)
    return f'<span class="node" title="{h(node_id)}">{h(label)}</span>'


def layout(title: str, body: str, *, csrf: str = "", served_by: str = "", active: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{h(name)}</a>'
        for href, name in NAV
    )
    logout = (
        f'<form method="post" action="/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{h(csrf)}">'
        f'<button type="submit">Log out</button></form>'
        if csrf
        else ""
    )
    header = (
        f"<header><strong>accessfabric</strong><nav>{nav}</nav>{logout}</header>" if csrf else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{h(title)} · accessfabric console</title>"
        f'<meta name="csrf-token" content="{h(csrf)}">'
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script>'
        f"</head><body>{header}<main><h1>{h(title)}</h1>{body}</main>"
        f'<footer>served by replica <span id="served-by">{h(served_by)}</span></footer>'
        "</body></html>"
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{h(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def login_page(error: str = "", served_by: str = "") -> str:
    message = f'<p class="error" role="alert">{h(error)}</p>' if error else ""
    form = (
        f"{message}<form method=post action=/login class=login>"
        "<label>Admin token <input type=password name=token autocomplete=off required "
        "maxlength=256 autofocus></label><button type=submit>Log in</button></form>"
        "<p class=hint>An admin token of the control plane (<code>afadm1_…</code>, from "
        "<code>accessfabric control init</code> or <code>control admin create</code>).</p>"
    )
    return layout("Log in", form, served_by=served_by)


def _age(seconds: object) -> str:
    return "never" if seconds is None else f"{float(seconds):.1f} s ago"  # type: ignore[arg-type]


def nodes_page(nodes: list[dict[str, Any]], csrf: str) -> str:
    rows = []
    for node in nodes:
        facts = node.get("facts") or {}
        health = str(node.get("health", ""))
        reasons = "; ".join(node.get("health_reasons") or [])
        versions = node.get("versions") or {}
        capability = ", ".join(
            f"{k}: {h(v if not isinstance(v, list) else ' '.join(map(str, v)))}"
            for k, v in facts.items()
            if v not in (None, "", [], {})
            and k in ("transports", "endpoints", "nat", "region", "services", "relay_classes")
        )
        revoke = "".join(
            f'<form method=post action="/nodes/{h(node["node_id"])}/revoke-role" class=inline>'
            f'<input type=hidden name=csrf value="{h(csrf)}">'
            f'<input type=hidden name=role value="{h(role)}">'
            f'<button type=submit title="revoke role {h(role)}">revoke {h(role)}</button></form>'
            for role in node.get("roles") or []
        )
        draining = bool(node.get("draining"))
        drain = (
            f'<form method=post action="/nodes/{h(node["node_id"])}/drain" class=inline>'
            f'<input type=hidden name=csrf value="{h(csrf)}">'
            + ("<input type=hidden name=undrain value=1>" if draining else "")
            + f'<button type=submit class="{"undrain" if draining else "drain"}" title="'
            + (
                "place devices and route through it again"
                if draining
                else "no device placed, no new route through it; it GOAWAYs its sessions "
                "once their streams finished"
            )
            + f'">{"undrain" if draining else "drain"}</button></form>'
        )
        rows.append(
            [
                f'<code class="node-id" title="{h(node["node_id"])}">{h(node["node_id"])}</code>',
                h(", ".join(node.get("roles") or [])),
                h(node.get("tenant")),
                f'<span class="health {h(health)}">{h(health)}</span>'
                + (' <span class="draining">draining</span>' if draining else "")
                + (f"<div class=reasons>{h(reasons)}</div>" if reasons else ""),
                h(f"protocol {versions.get('protocol')} · {versions.get('software') or '-'}"),
                capability or "-",
                h(_age(node.get("last_heartbeat_age_s"))),
                drain + revoke,
            ]
        )
    body = table(
        ["node", "roles", "tenant", "health", "versions", "capabilities", "last heartbeat",
         "actions"],
        rows, cls="nodes",
    )  # fmt: skip
    body += (
        '<p class=note id="drain-note">Drain: the node gets no device and no new route; it '
        "sends its sessions GOAWAY once their streams finished (at most its "
        "<code>drain_timeout</code>), and its devices move to other entries.</p>"
    )
    return body


def _hops(hops: list[str], names: dict[str, str] | None = None) -> str:
    return " → ".join(node_ref(hop, names) for hop in hops)


def routes_page(routes: list[dict[str, Any]], csrf: str = "") -> str:
    if not routes:
        return "<p>No source holds a route lease yet.</p>"
    parts = []
    for index, group in enumerate(routes):
        held = table(
            ["rank", "path", "healthy", "first-hop RTT", "live bytes", "last switch", "recovery"],
            (
                [
                    h(r.get("rank")),
                    _hops(r.get("hops") or []),
                    h("yes" if r.get("healthy") else "no"),
                    h("-" if r.get("srtt_ms") is None else f"{r['srtt_ms']} ms"),
                    h(r.get("bytes")),
                    h(r.get("last_switch") or "-"),
                    h("-" if r.get("recovery_ms") is None else f"{r['recovery_ms']} ms"),
                ]
                for r in group.get("held") or []
            ),
        )
        planned = []
        for route in group.get("planned") or []:
            reasons = table(
                ["factor", "contribution", "explanation"],
                (
                    [h(x["factor"]), h(f"{x['contribution']:+.2f}"), h(x["explanation"])]
                    for x in route.get("reasons") or []
                ),
                cls="reasons",
            )
            label = "primary" if route["rank"] == 0 else f"alternate {route['rank']}"
            planned.append(
                f'<details class="score" id="score-{index}-{route["rank"]}">'
                f"<summary>{h(label)}: {_hops(route['hops'])} — score {h(route['score'])}"
                f"{' (disjoint)' if route.get('disjoint') else ''}</summary>{reasons}</details>"
            )
        note = f"<p class=note>{h(group['note'])}</p>" if group.get("note") else ""
        test = (
            '<form method=post action="/routes/test" class="inline route-test">'
            f'<input type=hidden name=csrf value="{h(csrf)}">'
            f'<input type=hidden name=source value="{h(group["source"])}">'
            f'<input type=hidden name=service value="{h(group["service"])}">'
            f'<input type=hidden name=class value="{h(group["class"])}">'
            '<button type=submit title="the source probes the primary and each alternate '
            '(diag route): per-hop RTT, loss, the failing hop">Test these routes</button></form>'
        )
        parts.append(
            f'<section class="route"><h2>{h(group["service"])} / {h(group["class"])} from '
            f"{node_ref(group['source'])}</h2>{test}<h3>Held by the source</h3>{held}"
            f"<h3>Planner's score reasons</h3>{''.join(planned) or '<p>none</p>'}{note}</section>"
        )
    return "".join(parts)


def route_test_page(test: dict[str, Any]) -> str:
    """A route test (``diag route`` on the source) and, when done, its per-route probes."""
    state = str(test.get("state", ""))
    head = (
        f'<p id="route-test" data-test-id="{h(test.get("test_id"))}" data-state="{h(state)}">'
        f"{h(test.get('service'))} / {h(test.get('traffic_class'))} from "
        f"{node_ref(str(test.get('node_id', '')))}: <strong class=state>{h(state)}</strong></p>"
    )
    if state in ("queued", "running"):
        return head + (
            "<p class=note>The source runs the test after its next heartbeat; this page "
            "updates by itself.</p>"
        )
    if state == "expired":
        return head + "<p class=error>The source did not answer (gone, or it heartbeats to "
        "another control replica).</p>"
    result = test.get("result") or {}
    if result.get("error"):
        return head + f'<p class="error" role="alert">{h(result["error"])}</p>'
    rows = []
    for probe in result.get("routes") or []:
        hops = probe.get("hops") or []
        rtts = probe.get("hop_rtt_ms") or []
        sources = probe.get("hop_rtt_source") or []
        per_hop = "".join(
            f'<li class="hop-rtt" data-hop="{i + 1}">hop {i + 1} '
            f"{node_ref(str(hops[i]))} → {node_ref(str(hops[i + 1]))}: "
            f"{h('-' if rtt is None else f'{rtt} ms')}"
            f" <small>({h(sources[i] if i < len(sources) else '')})</small></li>"
            for i, rtt in enumerate(rtts)
            if i + 1 < len(hops)
        )
        rank = int(probe.get("rank", 0))
        rows.append(
            [
                h("primary" if rank == 0 else f"alternate {rank}"),
                _hops([str(x) for x in hops]),
                f'<span class="ok {"yes" if probe.get("ok") else "no"}">'
                f"{'yes' if probe.get('ok') else 'NO'}</span>",
                f"<ul class=hops>{per_hop}</ul>",
                h("-" if probe.get("end_to_end_ms") is None else f"{probe['end_to_end_ms']} ms"),
                h(probe.get("ping_loss")),
                h(probe.get("failing_hop") or "-"),
                h(probe.get("error") or "-"),
            ]
        )
    return head + table(
        ["route", "path", "ok", "per-hop RTT", "end to end", "PING loss", "failing hop",
         "error"],
        rows, cls="route-test",
    )  # fmt: skip


def services_page(services: list[dict[str, Any]]) -> str:
    if not services:
        return "<p>No service is registered.</p>"
    rows = []
    for service in services:
        for replica in service.get("replicas") or [None]:
            rows.append(
                [
                    h(service["service"]),
                    h(service.get("mode")),
                    h(service.get("tenant")),
                    h(service.get("epoch")),
                    node_ref(service["leader"]) if service.get("leader") else "-",
                    node_ref(replica["node_id"]) if replica else "no replica",
                    h("" if replica is None else ("active" if replica["active"] else "follower")),
                    h(
                        "-"
                        if replica is None or replica.get("lease_expires_in_s") is None
                        else f"{replica['lease_expires_in_s']} s"
                    ),
                ]
            )
    return table(
        ["service", "mode", "tenant", "epoch", "leader", "replica", "state", "lease expires in"],
        rows, cls="services",
    )  # fmt: skip


def traffic_page() -> str:
    return (
        "<p>Per-class throughput from the nodes' heartbeats (bytes per second, sent and "
        "received); updates every second without a reload.</p>"
        '<div id="charts-nodes" class="charts"></div><h2>Routes</h2>'
        '<div id="charts-routes" class="charts"></div>'
    )


def streams_page(nodes: list[dict[str, Any]]) -> str:
    rows = [
        [
            node_ref(node["node_id"]),
            node_ref(s["peer"]) if s["peer"].startswith("afn1") else h(s["peer"]),
            h(s["service"]),
            h(s["traffic_class"]),
            h(s["state"]),
            h(s["credit"]),
            h(s["bytes_in"]),
            h(s["bytes_out"]),
            h(s["queued"]),
            h(s["unacked"]),
            h("-" if s["rtt_ms"] is None else f"{s['rtt_ms']} ms"),
            f'<span class="blocked {h(s["blocked"])}">{h(s["blocked"])}</span>',
        ]
        for node in nodes
        for s in node["streams"]
    ]
    if not rows:
        return "<p>No live stream was reported in the last heartbeats.</p>"
    note = (
        "<p class=note>Each node's busiest live streams as of its last heartbeat "
        "(what <code>accessfabric diag stream</code> shows on the node). Blocked: "
        "<em>credit</em> (no window from the peer), <em>carrier</em> (carrier buffer full), "
        "<em>pacing</em> (the pacer holds back), <em>scheduler</em> (waiting its turn).</p>"
    )
    return note + table(
        ["node", "peer", "service", "class", "state", "credit", "bytes in", "bytes out",
         "queued", "unacked", "RTT", "blocked"],
        rows, cls="streams",
    )  # fmt: skip


def relays_page(relays: list[dict[str, Any]]) -> str:
    rows = [
        [
            node_ref(relay["node_id"]),
            h(u["tenant"]),
            h(u["traffic_class"]),
            h(u["streams"]),
            h(u["active"]),
            h(u["bytes_from_source"]),
            h(u["bytes_to_source"]),
        ]
        for relay in relays
        for u in relay["usage"]
    ]
    if not rows:
        return "<p>No relay has carried a stream yet.</p>"
    return table(
        ["relay", "tenant", "class", "streams", "active", "bytes from source",
         "bytes to source"],
        rows, cls="relays",
    )  # fmt: skip


def events_page(events: list[dict[str, Any]]) -> str:
    rows = [
        [
            h(time.strftime("%H:%M:%S", time.gmtime(float(e["at"])))),
            f'<span class="kind {h(e["kind"])}">{h(e["kind"])}</span>',
            h(e["subject"]),
            h(e["detail"]),
        ]
        for e in reversed(events)
    ]
    return (
        '<div id="events">'
        + table(["time (UTC)", "event", "subject", "detail"], rows, cls="events")
        + "</div>"
    )


def tokens_page(csrf: str, created: dict[str, Any] | None = None, error: str = "") -> str:
    result = ""
    if created is not None:
        result = (
            '<div class="created" role="status">Token created (shown once): '
            f'<code id="new-token">{h(created["token"])}</code><br>tenant {h(created["tenant"])},'
            f" roles {h(', '.join(created['roles']))}, uses {h(created['uses'])}, expires "
            f"{h(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(created['expires_at'])))}"
            "</div>"
        )
    if error:
        result = f'<p class="error" role="alert">{h(error)}</p>'
    roles = "".join(
        f'<label class=check><input type=checkbox name=roles value="{h(r)}"> {h(r)}</label>'
        for r in ROLES
    )
    return (
        result + "<h2>Create an enrollment token</h2>"
        '<form method=post action="/tokens" class="token-form">'
        f'<input type=hidden name=csrf value="{h(csrf)}">'
        "<label>Tenant <input name=tenant required maxlength=64 pattern='[a-z0-9][a-z0-9._-]*'>"
        f"</label><fieldset><legend>Roles</legend>{roles}</fieldset>"
        "<label>Lifetime (s) <input name=ttl_s type=number min=1 value=3600></label>"
        "<label>Uses <input name=uses type=number min=1 value=1></label>"
        "<button type=submit>Create token</button></form>"
    )
