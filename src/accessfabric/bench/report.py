"""The one JSON shape every benchmark suite prints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


class BenchSetupError(Exception):
    """A suite cannot run as asked (a bad setting); the command prints it, exit code 2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResult:
    """One figure and the baseline it is compared with, measured in the same run."""

    metric: str
    value: float
    unit: str
    baseline_metric: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


@dataclass(slots=True)
class BenchReport:
    suite: str
    results: list[BenchResult] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, result: BenchResult) -> None:
        self.results.append(result)

    def to_json(self) -> str:
        body: dict[str, object] = {
            "suite": self.suite,
            "results": [asdict(r) | {"ratio": round(r.ratio, 4)} for r in self.results],
        }
        if self.notes:
            body["notes"] = self.notes
        return json.dumps(body, indent=2)

    def to_table(self) -> str:
        lines = [f"suite {self.suite}"]
        for r in self.results:
            lines.append(
                f"  {r.metric:<34} {r.value:>14,.1f} {r.unit:<10} "
                f"vs {r.baseline_metric:<30} {r.baseline_value:>14,.1f}  ({r.ratio:.0%})"
            )
        lines.extend(f"  note: {k}: {v}" for k, v in self.notes.items())
        return "\n".join(lines)
