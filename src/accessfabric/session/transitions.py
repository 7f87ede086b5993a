"""Applying a state machine's transition table: one helper for the session's and a stream's.

``session_state.TRANSITIONS`` and ``stream_state.TRANSITIONS`` have one shape —
``{(state, input): next state}``, a missing pair being a transition the machine does not
have — and are applied and drawn the same way: :func:`apply` is the one lookup (used by
``SessionCore._enter`` and ``Stream.transition``, the only places a state changes) and
:func:`diagram` the one Mermaid rendering (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

State = TypeVar("State", bound=Enum)
Input = TypeVar("Input", bound=Enum)


def apply(table: Mapping[tuple[State, Input], State], state: State, event: Input) -> State | None:
    """The state ``event`` moves ``state`` to; None when the table has no such pair."""
    return table.get((state, event))


def diagram(table: Mapping[tuple[State, Input], State]) -> str:
    """The table as a Mermaid state diagram, one line per pair in the table's order."""
    lines = ["stateDiagram-v2"]
    for (state, event), target in table.items():
        lines.append(f"    {state.value} --> {target.value}: {event.value}")
    return "\n".join(lines)
