"""SIGHUP: re-read the node's config, apply what a running node can change, name the rest.

Applied in place: ``drain_timeout`` and the endpoints of existing ``[[peers]]``
(the next dial uses them).  Every other changed key is logged as needing a
restart, and the running node keeps its old value.  A config that no longer
loads is logged and ignored: the node keeps running as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from accessfabric.node.config.node_config import NodeConfig, PeerConfig

RELOADABLE = ("drain_timeout", "peers (endpoints)")
_IGNORED = ("source",)


@dataclass
class ReloadPlan:
    config: NodeConfig
    """The config the node runs with afterwards."""
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)


def _without_endpoints(peers: tuple[PeerConfig, ...]) -> tuple[PeerConfig, ...]:
    return tuple(dataclasses.replace(peer, endpoints=()) for peer in peers)


def plan_reload(running: NodeConfig, loaded: NodeConfig) -> ReloadPlan:
    """What of ``loaded`` the node running ``running`` takes now, and what waits for a restart."""
    plan = ReloadPlan(config=running)
    changes: dict[str, object] = {}
    for item in dataclasses.fields(NodeConfig):
        name = item.name
        old, new = getattr(running, name), getattr(loaded, name)
        if name in _IGNORED or old == new:
            continue
        if name == "drain_timeout":
            changes[name] = new
            plan.applied.append(name)
        elif name == "peers" and _without_endpoints(old) == _without_endpoints(new):
            changes[name] = new
            plan.applied.append("peers (endpoints)")
        else:
            plan.needs_restart.append(name)
    plan.config = dataclasses.replace(running, **changes)  # type: ignore[arg-type]
    return plan
