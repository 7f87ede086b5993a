"""``bench idle`` waits on its child processes: a child that died is an error, not a
hang (a dialer refused by the acceptor's handshake budget used to leave the parent
waiting for ever)."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from accessfabric.bench.idle import _reply


def test_a_child_that_died_before_answering_is_an_error_not_a_hang() -> None:
    mp = multiprocessing.get_context("fork")
    ours, theirs = mp.Pipe()
    child = mp.Process(target=sys.exit, args=(3,))
    child.start()
    with pytest.raises(RuntimeError, match=r"dialer process ended \(exit code 3\)"):
        _reply(ours, child, "dialer")
    theirs.close()


def test_an_answer_is_returned() -> None:
    mp = multiprocessing.get_context("fork")
    ours, theirs = mp.Pipe()
    child = mp.Process(target=theirs.send, args=("warm",))
    child.start()
    assert _reply(ours, child, "dialer") == "warm"
    child.join(5)
