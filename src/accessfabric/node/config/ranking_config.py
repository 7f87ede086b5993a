"""The ``[ranking]`` config table -> :class:`RankingPolicy` (documented in ``docs/config.md``).

Every key is optional and overrides one ``RankingPolicy`` field; ``[ranking.bulk]`` and
``[ranking.interactive]`` override single transport weights.  Errors are
:class:`RankingConfigError` naming the key below ``ranking``; ``config.py`` turns them
into its ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from accessfabric.node.config.section_error import SectionConfigError
from accessfabric.node.dialing.ranking.policy import RankingPolicy, TransportWeights
from accessfabric.wire.registry import TrafficClass

SECONDS_KEYS = ("half_life", "backoff_base", "backoff_max", "max_observation_age")
NUMBER_KEYS = (
    "backoff_factor",
    "reliability_weight",
    "reliability_prior",
    "latency_weight",
    "latency_floor",
    "latency_ceiling",
    "latency_prior",
    "capacity_penalty_max",
    "remote_hint_weight",
    "backoff_penalty",
    "emergency_penalty",
    "throughput_weight",
)
INT_KEYS = (
    "max_observations_per_candidate",
    "max_hints_per_candidate",
    "max_tracked_candidates",
    "max_reason_length",
    "max_report_entries",
)
WEIGHT_TABLES = ("bulk", "interactive")
RANKING_KEYS = (*SECONDS_KEYS, *NUMBER_KEYS, *INT_KEYS, *WEIGHT_TABLES, "latency_classes")
TRANSPORT_KEYS = tuple(f.name for f in dataclasses.fields(TransportWeights))


class RankingConfigError(SectionConfigError):
    """A bad key of ``[ranking]``."""


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RankingConfigError(key, f"expected a number, got {type(value).__name__}")
    return float(value)


def _keys(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise RankingConfigError(where, "expected a table")
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise RankingConfigError(name, f"unknown key (expected one of: {', '.join(allowed)})")
    return table


def _weights(table: Any, base: TransportWeights, where: str) -> TransportWeights:
    values = {k: _number(v, f"{where}.{k}") for k, v in _keys(table, TRANSPORT_KEYS, where).items()}
    try:
        return dataclasses.replace(base, **values)
    except ValueError as error:
        raise RankingConfigError(where, str(error)) from None


def ranking_policy(table: Any) -> RankingPolicy:
    """The policy ``table`` describes on top of the defaults."""
    table = _keys(table, RANKING_KEYS, "")
    defaults = RankingPolicy()
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in WEIGHT_TABLES:
            values[key] = _weights(value, getattr(defaults, key), key)
        elif key == "latency_classes":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RankingConfigError(key, "expected a list of traffic class names")
            try:
                values[key] = frozenset(TrafficClass.from_name(v) for v in value)
            except ValueError as error:
                raise RankingConfigError(key, str(error)) from None
        elif key in INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RankingConfigError(key, "expected an integer")
            values[key] = value
        else:
            values[key] = _number(value, key)
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as error:
        raise RankingConfigError("", str(error)) from None
