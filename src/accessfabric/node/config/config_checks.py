"""Checks of a node config that need more than the file: its own node id, whether it has work.

``load_node_config`` validates each key on its own; these look at the whole: a
``[[peers]]`` entry naming the node itself is an error (the node would never
dial it, and the operator meant another key), a node with nothing to listen on,
no peer, no control plane and nothing to serve or forward gets a warning.
"""

from __future__ import annotations

from accessfabric.node.config.node_config import NodeConfig


class ConfigConflict(Exception):
    """The config contradicts the key it runs with: one line, exit 2."""


def self_peer_problems(config: NodeConfig, node_id: str) -> list[str]:
    """Every ``[[peers]]`` entry that names this node itself."""
    return [
        f"{config.source}: peers[{index}].node_id: is this node's own id ({node_id}, key "
        f"{config.key_path}); remove the entry or use the other node's id"
        for index, peer in enumerate(config.peers)
        if peer.node_id == node_id
    ]


def check_against_key(config: NodeConfig, node_id: str) -> None:
    problems = self_peer_problems(config, node_id)
    if problems:
        raise ConfigConflict(problems[0])


def idle_warnings(config: NodeConfig) -> list[str]:
    """Why this node would start and do nothing useful (empty when it has work)."""
    has_work = config.listen or config.peers or config.control or config.services or config.forwards
    if has_work:
        return []
    return [
        f"{config.source}: nothing to do: no [[listen]], [[peers]], [control], [[services]] "
        "or [[forwards]]; the node will only answer `accessfabric status`"
    ]
