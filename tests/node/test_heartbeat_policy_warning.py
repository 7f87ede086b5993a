"""A node whose ``[control] heartbeat_interval`` exceeds the control plane's policy warns
(log line, ``status``, ``config check``) instead of flapping silently (issue 17)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from accessfabric.control.client.heartbeat_policy import heartbeat_mismatch
from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from accessfabric.observe.log_format import event_fields
from accessfabric.tools_cli import check_config
from tests.conditions import until_returns
from tests.control.api_harness import running_plane


def test_the_mismatch_and_its_effect() -> None:
    policy = {"heartbeat_interval_s": 1.0, "late_after_s": 2.5, "unreachable_after_s": 4.5}
    assert heartbeat_mismatch(None, policy) is None  # the policy's interval is used
    assert heartbeat_mismatch(0.5, policy) is None
    assert heartbeat_mismatch(1.0, policy) is None
    assert heartbeat_mismatch(5.0, None) is None  # no policy cached yet: nothing to say
    slower = heartbeat_mismatch(2.0, policy)
    assert slower is not None and slower.effect == "slower"
    late = heartbeat_mismatch(3.0, policy)
    assert late is not None and late.effect == "late"
    flaps = heartbeat_mismatch(5.0, {"heartbeat_interval_s": 1.0})  # 2.5 / 4.5 by default
    assert flaps is not None and flaps.effect == "unreachable"
    assert "unreachable after 4.5 s" in flaps.describe() and "flaps" in flaps.describe()


async def test_a_node_slower_than_the_policy_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="accessfabric")
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.2)) as plane:
        token = await plane.token("acme", ["mobile-edge"])
        NodeKey.generate().save(tmp_path / "device.key")
        path = tmp_path / "device.toml"
        path.write_text(
            f"""
key_path = "device.key"
roles = ["mobile-edge"]
[control]
url = "{plane.url}"
authority_key = "{format_authority_key(plane.authority.public_key)}"
token = "{token}"
heartbeat_interval = 1.0
"""
        )
        runtime = NodeRuntime(load_node_config(path))
        await runtime.start()
        try:

            async def warned() -> str | None:
                text = str(runtime.observe.status()["control"]["heartbeat_interval"])
                return None if text == "-" else text

            text = await until_returns(warned, 15.0)
            assert "exceeds the control plane's policy (0.2 s" in text
            assert "unreachable" in text
            lines = [r for r in caplog.records if "heartbeat interval exceeds" in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            fields = event_fields(lines[0])
            assert fields["effect"] == "unreachable" and fields["policy_s"] == 0.2, fields
        finally:
            await runtime.shutdown()
    # Offline, from the policy the node cached:
    errors, warnings, _ = check_config(str(path))
    assert not errors
    assert any("heartbeat_interval = 1 s exceeds" in w for w in warnings), warnings
