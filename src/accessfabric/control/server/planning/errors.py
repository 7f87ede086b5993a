"""Why the planner could not answer: typed, with a message an operator can act on."""

from __future__ import annotations


class PlanningError(Exception):
    """Base of every route-planning error."""


class UnknownNodeError(PlanningError, KeyError):
    """The source node is not in the graph snapshot."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown node"


class UnknownServiceError(PlanningError, KeyError):
    """The service name maps to no replicas."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown service"


class NoRouteError(PlanningError):
    """No route satisfies roles, tenant isolation, mobile rules and the hop cap."""
