"""Run the checks against one target and report: text lines or one JSON object."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from accessfabric.conformance import (  # noqa: F401  (registration order = run order)
    checks_credit,
    checks_frames,
    checks_goaway,
    checks_handshake,
    checks_limits,
    checks_ping,
    checks_streams,
)
from accessfabric.conformance.check import CHECKS, Check, Target
from accessfabric.conformance.peer import CheckFailed, NotApplicable

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    group: str
    title: str
    expected: str
    status: str
    detail: str
    seconds: float


def select(groups: Iterable[str] | None = None) -> list[Check]:
    wanted = set(groups) if groups else None
    return [c for c in CHECKS if wanted is None or c.group in wanted]


async def run_check(target: Target, item: Check) -> Result:
    started = time.perf_counter()
    status, detail = PASSED, ""
    try:
        # Every check bounds its own waits; this is a backstop for a peer that trickles.
        detail = await asyncio.wait_for(item.body(target), target.timeout * 12)
    except CheckFailed as failure:
        status, detail = FAILED, str(failure)
    except NotApplicable as reason:
        status, detail = SKIPPED, str(reason)
    except TimeoutError:
        status, detail = FAILED, f"did not finish within {target.timeout * 12:g} s"
    except (OSError, ssl.SSLError, EOFError) as error:
        status, detail = FAILED, f"connection failed: {type(error).__name__}: {error}"
    elapsed = time.perf_counter() - started
    return Result(item.id, item.group, item.title, item.expect, status, detail, elapsed)


async def run_all(target: Target, checks: list[Check]) -> list[Result]:
    return [await run_check(target, item) for item in checks]


def summary(results: list[Result]) -> str:
    passed = sum(r.status == PASSED for r in results)
    failed = sum(r.status == FAILED for r in results)
    skipped = sum(r.status == SKIPPED for r in results)
    line = f"{passed} passed, {failed} failed"
    return line + (f", {skipped} skipped" if skipped else "")


def text_report(results: list[Result]) -> str:
    lines = []
    for r in results:
        mark = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "SKIP"}[r.status]
        lines.append(f"{mark}  {r.id:<42} {r.title}")
        if r.status == FAILED:
            lines.append(f"      expected: {r.expected}")
        lines.append(f"      {r.detail}")
    lines.append(summary(results))
    return "\n".join(lines)


def json_report(target: Target, url: str, groups: list[str], results: list[Result]) -> str:
    document = {
        "target": url,
        "peer_id": target.peer_id,
        "groups": groups,
        "summary": summary(results),
        "passed": sum(r.status == PASSED for r in results),
        "failed": sum(r.status == FAILED for r in results),
        "skipped": sum(r.status == SKIPPED for r in results),
        "checks": [asdict(r) for r in results],
    }
    return json.dumps(document, indent=2)
