"""``[routes]``: the route-execution timers are configuration keys (issue 13, "Also seen").

They reach the node's :class:`RouteManager` and data plane; bad values are one-line
errors that name the file, the key and the problem.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ConfigError, RouteTimers, load_node_config
from accessfabric.node.runtime import NodeRuntime


def _write(tmp_path: Path, routes: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'key_path = "node.key"\n[routes]\n{routes}')
    return path


def test_route_timers_reach_route_execution(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "stall_timeout = 5\ninteractive_stall_timeout = 0.5\nresume_window = 12.5\n"
        "pressure_threshold = 75\ncooldown = 4\n",
    )
    config = load_node_config(path, environ={})
    assert config.routes == RouteTimers(
        stall_timeout=5.0, interactive_stall_timeout=0.5, resume_window=12.5,
        pressure_threshold=75, cooldown=4.0,
    )  # fmt: skip
    runtime = NodeRuntime(config, key=NodeKey.generate())
    routes = runtime.routes
    assert (routes.stall_timeout, routes.interactive_stall_timeout) == (5.0, 0.5)
    assert (routes.resume_window, routes.pressure_threshold, routes.cooldown) == (12.5, 75, 4.0)
    assert runtime.data_plane.resume_window == 12.5


def test_defaults_without_the_table(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('key_path = "node.key"\n')
    runtime = NodeRuntime(load_node_config(path, environ={}), key=NodeKey.generate())
    assert runtime.routes.stall_timeout == 3.0
    assert runtime.routes.interactive_stall_timeout == 1.0
    assert runtime.routes.resume_window == runtime.data_plane.resume_window == 30.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("stall_timeout = 0\n", "routes.stall_timeout: must be a positive number of seconds"),
        ('cooldown = "1s"\n', "routes.cooldown: expected a number of seconds"),
        ("pressure_threshold = 101\n", "routes.pressure_threshold: expected a percentage 1..100"),
        ("pressure_threshold = 9.5\n", "routes.pressure_threshold: expected a percentage 1..100"),
        ("stall = 1\n", "routes.stall: unknown key (expected one of: stall_timeout,"),
    ],
)
def test_route_timer_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_node_config(_write(tmp_path, text), environ={})
    assert str(error.value).startswith(f"{tmp_path / 'node.toml'}: {problem}")
