"""Stream and session states change only through their tables; time and randomness come in.

The session and its streams each have a transition table (``session_state.TRANSITIONS``,
``stream_state.TRANSITIONS``).  Read from the source: nothing in session/ assigns a
state except the two places that apply a table (and the constructors' initial states),
and the sans-IO packages import no clock and no random source.  Run: the session walks
its table through the handshake, a drain and an error, and docs/protocol.md shows the
session table as it is.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.session import (
    SessionConfig,
    SessionState,
    session_state,
    stream_state,
    transitions,
)
from accessfabric.session import events as ev
from accessfabric.session.session_state import SessionInput
from accessfabric.session.stream_state import StreamInput as I
from accessfabric.session.stream_state import StreamState
from accessfabric.wire import Goaway
from tests.session.pair import make_pair
from tests.session.peer_frames import feed

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "accessfabric"

# (module, class, function) -> the one attribute state it may assign.
STATE_WRITERS = {
    ("session/stream.py", "Stream", "__init__"),  # IDLE
    ("session/stream.py", "Stream", "transition"),  # the stream table
    ("session/core.py", "SessionCore", "__init__"),  # AWAIT_HELLO
    ("session/core.py", "SessionCore", "_enter"),  # the session table
}


def _state_assignments(path: Path) -> list[tuple[str, str, int]]:
    """(class, function, line) of every ``<x>.state = ...`` in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, cls: str, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child.name, func)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, cls, child.name)
            else:
                targets: list[ast.expr] = []
                if isinstance(child, ast.Assign):
                    targets = child.targets
                elif isinstance(child, ast.AugAssign | ast.AnnAssign):
                    targets = [child.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr in ("state", "_state"):
                        found.append((cls, func, child.lineno))
                visit(child, cls, func)

    visit(tree, "", "")
    return found


def test_only_the_tables_change_a_state() -> None:
    writers = set()
    for path in sorted((PACKAGE / "session").glob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for cls, func, line in _state_assignments(path):
            where = (rel, cls, func)
            assert where in STATE_WRITERS, f"{rel}:{line} ({cls}.{func}) assigns a state"
            writers.add(where)
    assert writers == STATE_WRITERS  # the allowance shrinks with the code


def _functions(path: Path) -> dict[tuple[str, str], ast.FunctionDef]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        (cls.name, func.name): func
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for func in cls.body
        if isinstance(func, ast.FunctionDef)
    }


def test_both_tables_are_applied_by_one_helper() -> None:
    """The two writers look their table up with ``transitions.apply``; no other code in
    session/ reads a ``TRANSITIONS`` table (a second lookup would be a second place to
    get the rule of a missing pair wrong)."""
    for rel, cls, func in STATE_WRITERS:
        if func == "__init__":
            continue
        node = _functions(PACKAGE / rel)[(cls, func)]
        calls = [
            c.func.id
            for c in ast.walk(node)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
        ]
        assert "apply" in calls, f"{rel} {cls}.{func} does not use transitions.apply"
    readers = set()
    for path in sorted((PACKAGE / "session").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript | ast.Attribute):
                value = node.value
                if isinstance(value, ast.Name) and value.id == "TRANSITIONS":
                    readers.add(path.name)
    # the tables' own modules iterate them for ACTIVE/diagram; nobody indexes them
    assert readers <= {"session_state.py", "stream_state.py"}, readers
    assert transitions.apply(stream_state.TRANSITIONS, StreamState.CLOSED, I.SEND_DATA) is None
    assert transitions.apply(session_state.TRANSITIONS, SessionState.READY, SessionInput.END) is (
        SessionState.CLOSED
    )
    assert stream_state.diagram() == transitions.diagram(stream_state.TRANSITIONS)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["session", "sealing", "wire"])
def test_randomness_is_passed_in(package: str) -> None:
    """No module draws random bytes itself: the caller passes the source in."""
    for path in sorted((PACKAGE / package).glob("*.py")):
        imported = _imported_modules(path)
        drawn = imported & {"secrets", "random", "os.urandom", "uuid"}
        assert not drawn, f"{path.relative_to(PACKAGE)} imports {sorted(drawn)}"
        source = path.read_text()
        for call in ("os.urandom(", "PrivateKey.generate(", "token_bytes("):
            assert call not in source, f"{path.relative_to(PACKAGE)} calls {call}"


@pytest.mark.parametrize("package", ["session", "sealing", "wire"])
def test_time_is_passed_in(package: str) -> None:
    """The sans-IO packages read no clock and do no I/O: ``now`` is an argument."""
    for path in sorted((PACKAGE / package).glob("*.py")):
        imported = {name.split(".")[0] for name in _imported_modules(path)}
        used = imported & {"time", "asyncio", "socket", "datetime"}
        assert not used, f"{path.relative_to(PACKAGE)} imports {sorted(used)}"


def test_tables_name_only_their_own_states() -> None:
    for (state, event), target in session_state.TRANSITIONS.items():
        assert isinstance(state, SessionState) and isinstance(target, SessionState)
        assert isinstance(event, SessionInput)
    for (state, _event), target in stream_state.TRANSITIONS.items():
        assert isinstance(state, stream_state.StreamState)
        assert isinstance(target, stream_state.StreamState)
    # every state but CLOSED can end; nothing leaves CLOSED
    assert {s for (s, e) in session_state.TRANSITIONS if e is SessionInput.END} == (
        set(SessionState) - {SessionState.CLOSED}
    )
    assert not [pair for pair in session_state.TRANSITIONS if pair[0] is SessionState.CLOSED]


def test_the_session_walks_its_table() -> None:
    """Handshake, a drain to the end, and an error: each step is a pair of the table."""
    pair = make_pair(handshake=False)
    seen = [(pair.a.state, pair.b.state)]
    for _ in range(6):  # one flight each way at a time
        to_b, to_a = pair.a.data_to_send(now=0.0), pair.b.data_to_send(now=0.0)
        pair.b.receive_data(to_b, 0.0)
        pair.a.receive_data(to_a, 0.0)
        seen.append((pair.a.state, pair.b.state))
    states = [a for a, _ in seen]
    assert states[0] is SessionState.AWAIT_HELLO and states[-1] is SessionState.READY
    steps = {(before, after) for before, after in itertools.pairwise(states)}
    allowed = {(s, t) for (s, _e), t in session_state.TRANSITIONS.items()}
    assert {step for step in steps if step[0] is not step[1]} <= allowed

    pair.b.open_stream("svc")
    pair.pump()
    pair.a.goaway()
    assert pair.a.state is SessionState.DRAINING
    pair.pump()
    assert pair.b.state is SessionState.DRAINING  # its stream keeps the session open
    (stream_id,) = pair.b.stream_ids()
    pair.b.close_stream(stream_id)
    pair.a.close_stream(stream_id)
    pair.pump()
    for session in (pair.a, pair.b):
        pair.pump()
        session.handle_timer(pair.now)
    assert pair.a.state is SessionState.CLOSED and pair.b.state is SessionState.CLOSED

    other = make_pair(SessionConfig(), SessionConfig())
    events = feed(other.b, Goaway(0, ErrorCode.INTERNAL_ERROR, "bye"))
    assert other.b.state is SessionState.CLOSED
    assert isinstance(events[-1], ev.SessionTerminated) and events[-1].remote


def test_protocol_doc_shows_the_session_table() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert f"```mermaid\n{session_state.diagram()}\n```" in doc
