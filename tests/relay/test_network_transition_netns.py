"""A laptop's network changes under its streams: wifi address gone, lte comes up.

Namespaces: ``ctl`` (control plane, one management link to every node), ``laptop``
(mobile-edge), ``entry``, ``home`` (service-host, a TCP echo server) and ``lte`` (a
router).  The laptop has two underlays to the entry: ``wifi`` (a direct link) and ``lte``
(through the router, its interface down at first).  Its static peer ``entry`` lists one
endpoint on each.  Through the laptop's interactive ``[[forwards]]`` listener an echo loop
pings every 50 ms while a bulk echo runs through its reliable one; then the laptop's wifi
addresses are flushed and the lte interface comes up.  The bulk's sha256 must match, the
echo loop must survive; reported: the interruption the change caused (``switch_gap_s``,
last answer before the flush to first answer after), the longest gap anywhere and where it
began, and the ping RTTs before the change.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from pathlib import Path

import pytest

from accessfabric.sim import Topology, netns_unavailable_reason
from accessfabric.sim.commands import run_command
from tests.relay import netns_control as nc

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HOSTS = ("laptop", "entry", "home")
ROLES = {"laptop": "mobile-edge", "entry": "entry", "home": "service-host"}
BULK = 64 * 1024 * 1024
CHAT_PORT = nc.FORWARD_PORT + 1
"""The laptop's interactive forward, which the echo loop uses (the bulk uses a reliable one)."""
CAP_TOML = (
    "[session]\npressure_min_rate = {}\n".format(os.environ["AF_TRANSITION_CAP"])
    if os.environ.get("AF_TRANSITION_CAP")
    else ""
)
"""``AF_TRANSITION_CAP=false`` (or a floor in bytes/s): every node runs with the pressure rate
cap off (or that floor), to compare by hand; ``make test`` runs the default (the cap on,
engaged while the interactive echo loop runs; ADR 0032, 0045)."""


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


class TransitionFabric(nc.ControlFabric):
    hosts = HOSTS
    roles = ROLES

    def __init__(self, topo: Topology, workdir: Path, carrier: str) -> None:
        self.carrier = carrier
        super().__init__(topo, workdir, route_lease_ttl=30.0)
        self.lte_routes()
        self.set_link("laptop", "lte", up=False)

    def add_links(self) -> None:
        topo = self.topo
        topo.add_host("lte", forwarding=True)
        topo.link("laptop", "entry")  # wifi
        topo.link("laptop", "lte")
        topo.link("lte", "entry")
        topo.link("entry", "home")

    def lte_routes(self) -> None:
        """Both of the entry's addresses are reachable over lte (as a public address is
        from any network): a QUIC connection to its wifi-side address can migrate."""
        topo = self.topo
        for address in (topo.host_addr("entry", "lte"), topo.host_addr("entry", "laptop")):
            topo.route("laptop", f"{address}/32", via="lte")
        topo.route("lte", f"{topo.host_addr('entry', 'laptop')}/32", via="entry")
        topo.route("entry", f"{topo.host_addr('laptop', 'lte')}/32", via="lte")

    def lte_bytes(self) -> int:
        """Bytes received on the laptop's lte interface."""
        dev = self.topo.host_dev("laptop", "lte")
        done = self.topo.run("laptop", ["cat", f"/sys/class/net/{dev}/statistics/rx_bytes"])
        return int(done.stdout)

    def set_link(self, host: str, peer: str, *, up: bool) -> None:
        dev = self.topo.host_dev(host, peer)
        state = "up" if up else "down"
        run_command(["ip", "-n", self.topo.ns(host), "link", "set", "dev", dev, state])

    def config(self, host: str, token: str) -> Path:
        topo = self.topo
        text = self.config_head(host)
        listen = {"entry": ["laptop", "lte"], "home": ["entry"]}.get(host, [])
        for peer in listen:
            address = topo.host_addr(host, peer)
            carrier = self.carrier if host == "entry" else "tcp"
            text += f'[[listen]]\ncarrier = "{carrier}"\naddress = "{address}:{nc.FABRIC_PORT}"\n'
        text += CAP_TOML
        if host == "laptop":
            scheme = self.carrier
            wifi = f"{scheme}://{topo.host_addr('entry', 'laptop')}:{nc.FABRIC_PORT}"
            lte = f"{scheme}://{topo.host_addr('entry', 'lte')}:{nc.FABRIC_PORT}"
            text += (
                f'[[peers]]\nnode_id = "{self.ids["entry"]}"\nname = "entry"\n'
                f'endpoints = ["{wifi}", "{lte}"]\nconnect = "always"\n'
                f'[[forwards]]\nlisten = "127.0.0.1:{nc.FORWARD_PORT}"\n'
                f'service = "{nc.SERVICE}"\n'
                f'[[forwards]]\nlisten = "127.0.0.1:{CHAT_PORT}"\n'
                f'service = "{nc.SERVICE}"\ntraffic_class = "interactive"\n'
                '[device]\nnetwork_type = "wifi"\n'
            )
        if host == "entry":
            url = f"tcp://{topo.host_addr('home', 'entry')}:{nc.FABRIC_PORT}"
            text += (
                f'[[peers]]\nnode_id = "{self.ids["home"]}"\nname = "home"\n'
                f'endpoints = ["{url}"]\nconnect = "always"\n'
            )
        if host == "home":
            text += f'[[services]]\nname = "{nc.SERVICE}"\ntarget = "127.0.0.1:{nc.ECHO_PORT}"\n'
        return self.write_config(host, text, token)

    def start(self) -> tuple[nc.JsonLines, nc.JsonLines]:
        """The bulk client (a reliable forward) and the echo loop's (an interactive one)."""
        self.init_control()
        self.start_control()
        echo = self.driver("home", "serve", f"127.0.0.1:{nc.ECHO_PORT}")
        client = self.driver("laptop", "client", f"127.0.0.1:{nc.FORWARD_PORT}")
        chat = self.driver("laptop", "client", f"127.0.0.1:{CHAT_PORT}")
        self.wait_control()
        self.start_nodes()
        echo.ready()
        client.ready()
        chat.ready()
        return client, chat


def _open_until_ok(client: nc.JsonLines, cid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not client.ask(op="open", id=cid)["ok"]:
        assert time.monotonic() < deadline, f"no stream within {timeout} s"
        time.sleep(0.2)


def _switch_gap(samples: list[list[float]], at: float) -> float:
    """From the last ping answered before ``at`` to the first answered after it: the
    interruption the network change caused (the longest gap may come from elsewhere: pings
    wait behind the bulk echo on a loaded machine)."""
    answered = sorted(sent + rtt for sent, rtt in samples)
    before = max((t for t in answered if t <= at), default=at)
    after = min((t for t in answered if t > at), default=at)
    return after - before


def _max_gap(samples: list[list[float]], start: float, end: float) -> tuple[float, float]:
    """The longest time without an answered ping, and when it began."""
    answered = [sent + rtt for sent, rtt in samples if start <= sent + rtt <= end]
    points = [start, *answered, end]
    return max((b - a, a) for a, b in itertools.pairwise(points))


@pytest.mark.parametrize("carrier", ["tcp", "quic"])
def test_wifi_to_lte_keeps_the_streams(tmp_path: Path, carrier: str) -> None:
    with Topology(prefix="aft") as topo:
        fabric = TransitionFabric(topo, tmp_path, carrier)
        client, chat = fabric.start()
        try:
            _open_until_ok(chat, "echo", timeout=40)
            assert chat.ask(op="ping", id="echo", interval=0.05)["ok"]
            _open_until_ok(client, "bulk", timeout=10)
            assert client.popen.stdin is not None
            client.popen.stdin.write(
                json.dumps({"op": "bulk", "id": "bulk", "bytes": BULK}).encode() + b"\n"
            )
            client.popen.stdin.flush()
            time.sleep(0.3)  # the bulk is under way
            switched_at = time.time()
            run_command(
                ["ip", "-n", topo.ns("laptop"), "addr", "flush", "dev",
                 topo.host_dev("laptop", "entry")]
            )  # fmt: skip
            flushed = time.time() - switched_at
            fabric.set_link("laptop", "lte", up=True)
            fabric.lte_routes()
            lte_up = time.time() - switched_at
            bulk = client.next(timeout=120)
            done_at = time.time()
            if not bulk["ok"]:  # leave each node's streams beside the logs, to see where
                (tmp_path / "bulk.json").write_text(json.dumps(bulk))  # with its progress
                for host in HOSTS:
                    with contextlib.suppress(Exception):
                        status = json.dumps(fabric.status(host), indent=1)
                        (tmp_path / f"{host}.status.json").write_text(status)
            assert bulk["ok"], bulk
            assert bulk["sent_sha256"] == bulk["echo_sha256"], bulk
            assert done_at - bulk["seconds"] < switched_at < done_at, bulk  # across the switch
            time.sleep(1.0)
            cap = [  # the laptop's pressure cap per session: give-ways, re-engagements
                (s.get("pressure_cap_give_ups"), s.get("pressure_cap_reengages"))
                for s in fabric.status("laptop").get("sessions", [])
            ]
            pings = chat.ask(op="report", id="echo")
            assert not pings["errors"], pings["errors"]
            gap, gap_at = _max_gap(pings["samples"], switched_at - 0.5, time.time())
            switch_gap = _switch_gap(pings["samples"], switched_at + flushed)
            rtts = sorted(rtt for sent, rtt in pings["samples"] if sent < switched_at)
            print("network transition:", {
                "carrier": carrier, "switch_gap_s": round(switch_gap, 3),
                "longest_gap_s": round(gap, 3),
                "gap_from_s": round(gap_at - switched_at, 3), "flushed_s": round(flushed, 3),
                "lte_up_s": round(lte_up, 3), "bulk_s": round(bulk["seconds"], 2),
                "cap_give_ups_reengages": cap,
                "rtt_before_p50_max_s": [round(rtts[len(rtts) // 2], 3), round(rtts[-1], 3)]
                if rtts else None,
            })  # fmt: skip
            # target <= 1 s: TCP 0.2-0.6 s measured (session ended at once, resumed on a new
            # one), QUIC see docs/node.md (migrated); before the watch: stalls >= 5 s
            assert switch_gap < 3.0, switch_gap
            assert fabric.lte_bytes() > BULK // 4  # the echo came back over lte
            log = fabric.log("laptop")
            if carrier == "tcp":  # the session on the vanished address ended at once
                assert "its local address" in log and "is gone" in log
            else:  # the QUIC connection moved to the lte path, the session kept
                assert "session migrated" in log, log
                assert "session lost with a network change" not in log, log
        finally:
            print("logs in", tmp_path)
            for proc in fabric.nodes.values():
                proc.kill()
            if fabric.control is not None:
                fabric.control.kill()
