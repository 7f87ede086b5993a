"""The rules of the session's mixins (docs/adr/0036-session-mixins.md), read from the source.

``Session`` is assembled from mixins that each inherit ``SessionCore``: the core owns the
state (its ``__init__`` creates every attribute), a mixin owns one concern and calls only
its own methods and the core's, no two parts define the same method, and only the
assembly (``session.py``) reaches across parts.
"""

from __future__ import annotations

import ast
from pathlib import Path

from accessfabric.session.core import SessionCore
from accessfabric.session.handshake import Handshake
from accessfabric.session.output import Output
from accessfabric.session.resume import Resume
from accessfabric.session.session import Session
from accessfabric.session.stream_frames import StreamFrames
from accessfabric.session.timers import Timers

SESSION = Path(__file__).resolve().parents[2] / "src" / "accessfabric" / "session"
MIXINS = {
    "handshake": Handshake,
    "stream_frames": StreamFrames,
    "resume": Resume,
    "output": Output,
    "timers": Timers,
}


def _class_node(module: str, name: str) -> ast.ClassDef:
    tree = ast.parse((SESSION / f"{module}.py").read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return node


def _methods(node: ast.ClassDef) -> set[str]:
    return {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _self_calls(node: ast.ClassDef) -> set[str]:
    """Names of ``self.<name>(...)`` calls in the class."""
    return {
        call.func.attr
        for call in ast.walk(node)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "self"
    }


def _self_assignments(node: ast.AST) -> set[str]:
    """Attributes assigned as ``self.<name> = / += ...``."""
    names = set()
    for child in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(child, ast.Assign):
            targets = child.targets
        elif isinstance(child, ast.AugAssign | ast.AnnAssign):
            targets = [child.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


def test_session_is_the_mixins_over_the_core() -> None:
    assert Session.__bases__ == (Handshake, StreamFrames, Resume, Output, Timers)
    for mixin in MIXINS.values():
        assert mixin.__bases__ == (SessionCore,), mixin
        assert "__init__" not in vars(mixin), f"{mixin.__name__} defines __init__"
    assert "__init__" not in vars(Session)


def test_the_core_creates_every_attribute() -> None:
    core = _class_node("core", "SessionCore")
    (init,) = [n for n in core.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    created = _self_assignments(init)
    parts = {**{m: c.__name__ for m, c in MIXINS.items()}, "session": "Session"}
    for module, name in parts.items():
        stray = _self_assignments(_class_node(module, name)) - created
        assert not stray, f"{module}.{name} assigns attributes the core does not create: {stray}"


def test_the_slots_are_what_the_core_creates() -> None:
    """``SessionCore.__slots__`` lists exactly what its ``__init__`` creates, and no part
    adds a slot or a ``__dict__`` (ADR 0044)."""
    core = _class_node("core", "SessionCore")
    (init,) = [n for n in core.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    assert set(SessionCore.__slots__) == _self_assignments(init)
    for part in (*MIXINS.values(), Session):
        assert vars(part).get("__slots__") == (), part


def test_a_mixin_calls_only_itself_and_the_core() -> None:
    core = _methods(_class_node("core", "SessionCore")) | set(vars(SessionCore))
    for module, mixin in MIXINS.items():
        node = _class_node(module, mixin.__name__)
        own = _methods(node)
        inherited_elsewhere = {
            name
            for other in MIXINS.values()
            if other is not mixin
            for name in vars(other)
            if callable(vars(other)[name])
        }
        reached = (_self_calls(node) - own - core) & (inherited_elsewhere | set(vars(Session)))
        assert not reached, f"{mixin.__name__} calls other parts: {reached}"


def test_no_two_parts_define_one_method() -> None:
    seen: dict[str, str] = {}
    for owner in (*MIXINS.values(), Session):
        for name, value in vars(owner).items():
            if name.startswith("__") or not callable(value):
                continue
            assert name not in seen, f"{name} in {seen.get(name)} and {owner.__name__}"
            seen[name] = owner.__name__
    # the one override: the core's hook that Session fills with the dispatch table
    overrides = {n for n in seen if n in vars(SessionCore)}
    assert overrides == {"_build_dispatch"}
