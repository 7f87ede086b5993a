"""Parse the human units used by ``tc`` style arguments: ``"20ms"``, ``"800mbit"``."""

from __future__ import annotations

import re

_DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z]*)\s*$")


def _split(text: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(text.lower())
    if match is None:
        raise ValueError(f"cannot parse {text!r}: expected a number followed by a unit")
    return float(match.group(1)), match.group(2)


def parse_duration(value: str | float) -> float:
    """Seconds from ``"20ms"``, ``"1.5s"``, ``"250us"`` or a plain number of seconds."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value!r}")
        return float(value)
    number, unit = _split(value)
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit in {value!r} (use s, ms or us)")
    return number * _DURATION_UNITS[unit]


def parse_rate(value: str | float) -> float:
    """Bits per second from ``"800mbit"``, ``"10kbit"`` or a plain number of bits per second."""
    if isinstance(value, int | float):
        rate = float(value)
    else:
        number, unit = _split(value)
        if unit not in _RATE_UNITS:
            raise ValueError(f"unknown rate unit in {value!r} (use bit, kbit, mbit or gbit)")
        rate = number * _RATE_UNITS[unit]
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {value!r}")
    return rate
