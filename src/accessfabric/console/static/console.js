// accessfabric console: live throughput charts and the event timeline (no libraries).
"use strict";

const CLASS_COLOURS = {
  control: "#888", interactive: "#d62728", dns: "#9467bd", reliable: "#1f77b4",
  bulk: "#2ca02c", media: "#ff7f0e", background: "#8c564b",
};
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 360, HEIGHT = 120;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function human(bps) {
  const units = ["B/s", "KB/s", "MB/s", "GB/s"];
  let i = 0;
  while (bps >= 1000 && i < units.length - 1) { bps /= 1000; i++; }
  return bps.toFixed(i ? 1 : 0) + " " + units[i];
}

function chart(container, key, title, samples) {
  let box = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!box) {
    box = el("figure", { "class": "chart", "data-key": key });
    box.appendChild(el("figcaption", {}, title));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute("width", WIDTH); svg.setAttribute("height", HEIGHT);
    box.appendChild(svg);
    box.appendChild(el("div", { "class": "legend" }));
    container.appendChild(box);
  }
  const svg = box.querySelector("svg");
  const legend = box.querySelector(".legend");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  legend.textContent = "";
  const classes = new Set();
  samples.forEach((s) => Object.keys(s.bps).forEach((c) => classes.add(c)));
  let peak = 1;
  samples.forEach((s) => Object.values(s.bps).forEach((v) => { if (v > peak) peak = v; }));
  let latest = 0;
  for (const cls of [...classes].sort()) {
    const points = samples.map((s, i) => {
      const x = samples.length > 1 ? (i * WIDTH) / (samples.length - 1) : 0;
      const y = HEIGHT - 4 - ((s.bps[cls] || 0) * (HEIGHT - 8)) / peak;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "series " + cls);
    line.setAttribute("data-class", cls);
    line.setAttribute("stroke", CLASS_COLOURS[cls] || "#000");
    line.setAttribute("fill", "none");
    svg.appendChild(line);
    const last = samples.length ? (samples[samples.length - 1].bps[cls] || 0) : 0;
    latest += last;
    const item = el("span", { "class": "item", "data-class": cls, "data-bps": String(last) },
      `${cls} ${human(last)}`);
    item.style.color = CLASS_COLOURS[cls] || "#000";
    legend.appendChild(item);
  }
  box.setAttribute("data-latest-bps", String(latest));
  box.setAttribute("data-samples", String(samples.length));
}

async function refreshTraffic() {
  const nodes = document.getElementById("charts-nodes");
  const routes = document.getElementById("charts-routes");
  try {
    const reply = await fetch("/api/traffic", { credentials: "same-origin" });
    if (reply.status === 401) { window.location = "/login"; return; }
    if (!reply.ok) return;
    const data = await reply.json();
    for (const [node, samples] of Object.entries(data.nodes)) {
      chart(nodes, "node:" + node, "node " + node.slice(0, 14) + "…", samples);
    }
    for (const route of data.routes) {
      const hops = (route.hops || []).map((h) => h.slice(0, 9)).join(" → ");
      const title = `${route.service}/${route.class} rank ${route.rank}: ${hops}`;
      chart(routes, "route:" + route.source + ":" + route.route_id, title, route.samples);
    }
    document.body.setAttribute("data-traffic-updates",
      String(Number(document.body.getAttribute("data-traffic-updates") || 0) + 1));
  } catch (e) { /* a failed poll: try again next tick (the replica may be failing over) */ }
}

async function refreshEvents() {
  const box = document.getElementById("events");
  try {
    const reply = await fetch("/api/events", { credentials: "same-origin" });
    if (!reply.ok) return;
    const data = await reply.json();
    const tbody = box.querySelector("tbody");
    tbody.textContent = "";
    for (const e of data.events.slice().reverse()) {
      const row = el("tr");
      row.appendChild(el("td", {}, new Date(e.at * 1000).toISOString().slice(11, 19)));
      const kind = el("td");
      kind.appendChild(el("span", { "class": "kind " + e.kind }, e.kind));
      row.appendChild(kind);
      row.appendChild(el("td", {}, e.subject));
      row.appendChild(el("td", {}, e.detail));
      tbody.appendChild(row);
    }
  } catch (e) { /* next tick */ }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("charts-nodes")) {
    refreshTraffic();
    setInterval(refreshTraffic, 1000);
  }
  if (document.getElementById("events")) setInterval(refreshEvents, 3000);
});

// A route test page polls its test until the source answered, then reloads once.
document.addEventListener("DOMContentLoaded", () => {
  const test = document.getElementById("route-test");
  if (!test) return;
  const state = test.getAttribute("data-state");
  if (state !== "queued" && state !== "running") return;
  const id = test.getAttribute("data-test-id");
  const poll = async () => {
    try {
      const reply = await fetch("/api/route-tests/" + encodeURIComponent(id),
        { credentials: "same-origin" });
      if (reply.status === 401) { window.location = "/login"; return; }
      if (reply.ok) {
        const data = await reply.json();
        if (data.state !== state) { window.location.reload(); return; }
      }
    } catch (e) { /* next tick */ }
    setTimeout(poll, 500);
  };
  setTimeout(poll, 500);
});
