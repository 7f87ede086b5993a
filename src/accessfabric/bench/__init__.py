"""Benchmark suites: each measures the project beside a baseline run in the same process.

A suite is a function ``run(quick: bool) -> BenchReport``; ``SUITES`` maps the
name used on the command line (``accessfabric bench NAME``) to the module that
defines it, imported only when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from accessfabric.bench.report import BenchReport, BenchResult, BenchSetupError

SUITES: dict[str, str] = {
    "abuse": "accessfabric.bench.abuse",
    "carrier": "accessfabric.bench.carrier",
    "codec": "accessfabric.bench.codec",
    "directory": "accessfabric.bench.directory",
    "hol": "accessfabric.bench.hol",
    "fleet": "accessfabric.bench.fleet",
    "idle": "accessfabric.bench.idle",
    "control": "accessfabric.bench.control",
    "relay": "accessfabric.bench.relay",
    "session": "accessfabric.bench.session",
    "tls": "accessfabric.bench.tls_transport",
    "vpn": "accessfabric.bench.vpn",
}


def load_suite(name: str) -> Callable[[bool], BenchReport]:
    module = importlib.import_module(SUITES[name])
    run: Callable[[bool], BenchReport] = module.run
    return run


__all__ = ["SUITES", "BenchReport", "BenchResult", "BenchSetupError", "load_suite"]
