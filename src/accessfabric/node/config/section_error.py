"""The error a reader of one node.toml table raises: the key below the table, and the problem.

``node_config`` turns it into its ``ConfigError`` at ``table.key`` (or the table itself
when ``key`` is empty).
"""

from __future__ import annotations


class SectionConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
