"""The import graph follows docs/architecture.md: imports point down the layers, node/
uses only the node side of control/, services/ never import control/, no cycles.

Every import counts: module level, inside functions and under ``TYPE_CHECKING`` (a
type-only back-reference is still a module that knows the one above it).  The known
exceptions are listed here and may only shrink: an entry that no longer occurs fails too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "accessfabric"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

Edge = tuple[str, str]

KNOWN_UPWARD: frozenset[Edge] = frozenset()
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
NAMED_PAIRS = [  # the cycles issue 15 named: they must never come back
    ("accessfabric.node.runtime", "accessfabric.node.control_link"),
    ("accessfabric.control.client.agent", "accessfabric.control.server.cli"),
    ("accessfabric.cli", "accessfabric.tools_cli"),
    ("accessfabric.control.server.plane", "accessfabric.control.server.replication"),
    ("accessfabric.control.server.plane", "accessfabric.control.server.fleet_events"),
    ("accessfabric.control.server.api.schema", "accessfabric.control.server.api.console_schema"),
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, modules: dict[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # ``from pkg import submodule`` imports the submodule (and runs pkg/__init__,
        # which counts only when a name is not a submodule).
        subs = [f"{node.module}.{alias.name}" for alias in node.names]
        found = [name for name in subs if name in modules]
        yield from found
        if len(found) < len(subs) and node.module in modules:
            yield node.module


@cache
def graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    edges: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges[name] = frozenset(
            target
            for node in ast.walk(tree)
            for target in _imported(node, modules)
            if target != name
        )
    return edges


@cache
def layers() -> dict[str, int]:
    """Top-level package or module name -> layer, from the ``layers`` block of the doc."""
    block = re.search(r"```layers\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block is not None, "docs/architecture.md has no ```layers block"
    table = {}
    for line in block.group(1).splitlines():
        rank, *names = line.split()
        for name in names:
            table[name] = int(rank)
    return table


TOP = 9


def _unit(module: str, table: dict[str, int] | None = None) -> str:
    """The name the layer table knows a module by: the longest dotted prefix it lists
    (``observe.log_rate`` before ``observe``), else the top-level package
    (``accessfabric`` for the root)."""
    parts = module.split(".")
    if table is not None:
        for end in range(len(parts), 2, -1):
            name = ".".join(parts[1:end])
            if name in table:
                return name
    return parts[1] if len(parts) > 1 else parts[0]


def upward(edges: dict[str, frozenset[str]], table: dict[str, int]) -> set[Edge]:
    """Imports of a higher layer, or across packages of one layer (below the top)."""
    bad = set()
    for source, targets in edges.items():
        for target in targets:
            a, b = _unit(source, table), _unit(target, table)
            if a == b or b == "accessfabric" or _unit(source) == _unit(target):
                continue
            rank_a, rank_b = table[a], table[b]
            if rank_b > rank_a or (rank_b == rank_a and rank_a != TOP):
                bad.add((source, target))
    return bad


def cycles(edges: dict[str, frozenset[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


# ---------------------------------------------------------------- the checks themselves


def test_every_package_has_a_layer() -> None:
    table = layers()
    missing = {_unit(m) for m in graph()} - set(table)
    assert not missing, f"add to the layers block of docs/architecture.md: {sorted(missing)}"


def test_imports_point_down_the_layers() -> None:
    bad = upward(graph(), layers())
    assert bad - KNOWN_UPWARD == set(), "imports up the layers (docs/architecture.md)"
    assert KNOWN_UPWARD - bad == set(), "gone: remove from KNOWN_UPWARD"


def test_node_uses_only_the_node_side_of_control() -> None:
    doc = ARCHITECTURE.read_text()
    match = re.search(r"node/ may use these packages of control/.*?`([^`]*)`", doc, re.S)
    assert match is not None
    allowed = tuple(f"accessfabric.control.{name}." for name in match.group(1).split())
    reached = {
        (source, target)
        for source, targets in graph().items()
        if source.startswith("accessfabric.node")
        for target in targets
        if target.startswith("accessfabric.control") and not target.startswith(allowed)
    }
    assert reached == set(), "node/ imports control's server"


def test_control_audiences_import_down() -> None:
    """kernel/ imports no other part of control/; client/ never imports server/."""
    below = {"kernel": ("kernel",), "client": ("kernel", "client")}
    reached = {
        (source, target)
        for source, targets in graph().items()
        for audience, may in below.items()
        if source.startswith(f"accessfabric.control.{audience}.")
        for target in targets
        if target.startswith("accessfabric.control.")
        and not target.startswith(tuple(f"accessfabric.control.{name}." for name in may))
    }
    assert reached == set(), "control/ audiences: kernel <- client <- server"


def test_services_never_import_control() -> None:
    reached = {
        (source, target)
        for source, targets in graph().items()
        if source.startswith("accessfabric.services")
        for target in targets
        if target.startswith("accessfabric.control")
    }
    assert reached == set()


NODE_WIRING = {"runtime", "parts", "control_link", "operator_drain", "reload"}
"""node/'s top level: the modules that wire the node (docs/architecture.md, Packages)."""


def test_node_modules_live_in_their_neighbourhood() -> None:
    node = PACKAGE / "node"
    top = {path.stem for path in node.glob("*.py")} - {"__init__"}
    assert top - NODE_WIRING == set(), "put new node modules in a subpackage (ADR 0035)"
    doc = ARCHITECTURE.read_text()
    for package in sorted(p.name for p in node.iterdir() if (p / "__init__.py").exists()):
        assert f"`node/{package}/`" in doc, f"docs/architecture.md does not name node/{package}/"


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert found - KNOWN_CYCLES == set(), "import cycles"
    assert KNOWN_CYCLES - found == set(), "gone: remove from KNOWN_CYCLES"
    for a, b in NAMED_PAIRS:
        assert not any(a in c and b in c for c in found), (a, b)


def test_the_checks_catch_what_they_look_for() -> None:
    table = {"wire": 1, "session": 2, "node": 6, "cli": TOP, "bench": TOP}
    edges = {
        "accessfabric.session.core": frozenset({"accessfabric.node.runtime"}),
        "accessfabric.node.runtime": frozenset({"accessfabric.session.core"}),
        "accessfabric.wire.frames": frozenset({"accessfabric.wire.limits"}),
        "accessfabric.wire.limits": frozenset(),
        "accessfabric.cli": frozenset({"accessfabric.bench.relay"}),
        "accessfabric.bench.relay": frozenset(),
    }
    assert upward(edges, table) == {("accessfabric.session.core", "accessfabric.node.runtime")}
    assert cycles(edges) == {frozenset({"accessfabric.session.core", "accessfabric.node.runtime"})}
