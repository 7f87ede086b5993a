"""The ``[limits]`` config table -> :class:`AdmissionLimits` (documented in ``docs/config.md``).

Every key is optional and overrides one field; counts are integers >= 1, rates and
bursts positive numbers.  Errors are :class:`LimitsConfigError` naming the key below
``limits``; ``config.py`` turns them into its ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from accessfabric.node.config.section_error import SectionConfigError
from accessfabric.node.serving.admission import LIMIT_KEYS, AdmissionLimits

INT_KEYS = (
    "max_pending_handshakes",
    "max_pending_handshakes_per_address",
    "max_sessions_per_tenant",
    "max_relay_streams_per_tenant",
)
ZERO_MEANS_NONE = ("relay_bytes_per_tenant",)
"""Integer keys where 0 means "no limit"."""


class LimitsConfigError(SectionConfigError):
    """A bad key of ``[limits]``."""


def admission_limits(table: Any) -> AdmissionLimits:
    if not isinstance(table, dict):
        raise LimitsConfigError("", f"expected a table, got {type(table).__name__}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in LIMIT_KEYS:
            raise LimitsConfigError(key, f"unknown key (expected one of: {', '.join(LIMIT_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LimitsConfigError(key, f"expected a number, got {type(value).__name__}")
        if key in ZERO_MEANS_NONE:
            if not isinstance(value, int) or value < 0:
                raise LimitsConfigError(key, f"expected an integer >= 0, got {value!r}")
            values[key] = value
        elif key in INT_KEYS:
            if not isinstance(value, int) or value < 1:
                raise LimitsConfigError(key, f"expected an integer >= 1, got {value!r}")
            values[key] = value
        elif not math.isfinite(value) or value <= 0:
            raise LimitsConfigError(key, f"expected a positive number, got {value!r}")
        else:
            values[key] = float(value)
    return dataclasses.replace(AdmissionLimits(), **values)
