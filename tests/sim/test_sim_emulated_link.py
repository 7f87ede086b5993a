"""An emulated link (two TUN devices + TunBridge) between two namespaces."""

from __future__ import annotations

import re

import pytest

from accessfabric.sim import Topology
from accessfabric.sim.namespaces import list_namespaces

pytestmark = pytest.mark.netns


def rtts_ms(output: str) -> list[float]:
    return [float(v) for v in re.findall(r"time=([0-9.]+) ms", output)]


@pytest.mark.usefixtures("tun_ok")
def test_rtt_through_the_bridge_is_twice_the_delay(ping: str) -> None:
    with Topology(prefix="aft") as topo:
        topo.add_host("a")
        topo.add_host("b")
        link = topo.emulated_link("a", "b", delay="20ms")
        assert link.bridge is not None and link.dev.startswith("tun")
        argv = [ping, "-c", "5", "-i", "0.1", "-W", "1", topo.host_addr("b", "a")]
        times = rtts_ms(topo.run("a", argv).stdout)
        assert len(times) == 5
        assert min(times) >= 40.0 and max(times) < 80.0, times
        assert link.bridge.a_to_b.stats.delivered >= 5
        names = topo.namespaces
    assert not set(names) & set(list_namespaces())


@pytest.mark.usefixtures("tun_ok")
def test_emulated_loss_and_kernel_impairments_on_tun(topo: Topology, ping: str) -> None:
    topo.add_host("a")
    topo.add_host("b")
    link = topo.emulated_link("a", "b", delay=0.001, loss_percent=100.0)
    topo.set_rate("a", "b", rate="100mbit", burst="64kb", latency="20ms")
    argv = [ping, "-c", "2", "-i", "0.1", "-W", "1", topo.host_addr("b", "a")]
    done = topo.run("a", argv, check=False)
    assert done.returncode != 0
    assert link.bridge is not None and link.bridge.a_to_b.stats.lost >= 2
