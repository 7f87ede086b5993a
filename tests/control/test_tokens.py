"""Enrollment tokens: created once, redeemed atomically; bad, expired and used-up are distinct."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.store import Entry, SqliteStore
from accessfabric.control.server.tokens import (
    KEY_PREFIX,
    BadTokenError,
    EnrollmentTokens,
    TokenExpiredError,
    TokenUsedUpError,
)
from tests.control.conftest import FakeClock


@pytest.fixture
def tokens(store: SqliteStore, clock: FakeClock) -> EnrollmentTokens:
    return EnrollmentTokens(store, clock=clock, retention=600)


def test_create_and_redeem(tokens: EnrollmentTokens, store: SqliteStore) -> None:
    created = tokens.create("acme", ["relay", Role.EXIT], ttl=3600, uses=2)
    assert created.token.startswith("aft1_")
    stored = store.get(KEY_PREFIX + created.info.token_id)
    assert stored is not None
    secret = created.token.rsplit("_", 1)[1]
    assert secret.encode() not in stored.value  # only the hash is kept
    grant = tokens.redeem(created.token)
    assert (grant.tenant, grant.roles, grant.uses_left) == (
        "acme",
        frozenset({Role.RELAY, Role.EXIT}),
        1,
    )
    assert tokens.redeem(f" {created.token}\n").uses_left == 0
    with pytest.raises(TokenUsedUpError):
        tokens.redeem(created.token)
    assert [info.uses_left for info in tokens.list()] == [0]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "hello",
        lambda t: t[:-1],
        lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"),  # wrong secret
        lambda t: t[:5] + "0123456789abcdef" + t[21:],  # unknown id
    ],
)
def test_bad_tokens(tokens: EnrollmentTokens, mangle: object) -> None:
    created = tokens.create("acme", ["relay"], ttl=60)
    with pytest.raises(BadTokenError):
        tokens.redeem(mangle(created.token))  # type: ignore[operator]
    assert tokens.redeem(created.token).uses_left == 0  # the failures spent nothing


def test_expired(tokens: EnrollmentTokens, clock: FakeClock) -> None:
    created = tokens.create("acme", ["relay"], ttl=60)
    with pytest.raises(TokenExpiredError):
        tokens.redeem(created.token, now=clock.now + 60)
    assert tokens.redeem(created.token, now=clock.now + 59).uses_left == 0


def test_wrong_secret_does_not_reveal_expiry(tokens: EnrollmentTokens, clock: FakeClock) -> None:
    created = tokens.create("acme", ["relay"], ttl=60)
    wrong = created.token[:-1] + ("a" if created.token[-1] != "a" else "b")
    with pytest.raises(BadTokenError):
        tokens.redeem(wrong, now=clock.now + 120)


def test_record_disappears_after_retention(tokens: EnrollmentTokens, clock: FakeClock) -> None:
    created = tokens.create("acme", ["relay"], ttl=60)
    clock.advance(61)
    with pytest.raises(TokenExpiredError):
        tokens.redeem(created.token)
    clock.advance(600)
    with pytest.raises(BadTokenError):
        tokens.redeem(created.token)
    assert tokens.list() == []


def test_revoke(tokens: EnrollmentTokens) -> None:
    created = tokens.create("acme", ["relay"], ttl=60)
    assert tokens.revoke(created.info.token_id)
    assert not tokens.revoke(created.info.token_id)
    with pytest.raises(BadTokenError):
        tokens.redeem(created.token)


def test_invalid_create(tokens: EnrollmentTokens) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        tokens.create("acme", ["pilot"], ttl=60)
    with pytest.raises(ValueError):
        tokens.create("acme", [], ttl=60)
    with pytest.raises(ValueError):
        tokens.create("ACME corp", ["relay"], ttl=60)
    with pytest.raises(ValueError):
        tokens.create("acme", ["relay"], ttl=0)
    with pytest.raises(ValueError):
        tokens.create("acme", ["relay"], ttl=60, uses=0)


def test_interleaved_redeems_of_a_one_use_token(
    tokens: EnrollmentTokens, store: SqliteStore
) -> None:
    """Both redeemers read the record before either writes: the CAS lets exactly one win."""
    created = tokens.create("acme", ["relay"], ttl=60)
    barrier = threading.Barrier(2)
    first_read = threading.local()
    original_get = store.get

    def get_then_wait(key: str) -> Entry | None:
        entry = original_get(key)
        if not getattr(first_read, "done", False):
            first_read.done = True
            barrier.wait(timeout=5)
        return entry

    store.get = get_then_wait  # type: ignore[method-assign]
    outcomes: list[str] = []

    def redeem() -> None:
        try:
            tokens.redeem(created.token)
            outcomes.append("won")
        except TokenUsedUpError:
            outcomes.append("used up")

    threads = [threading.Thread(target=redeem) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["used up", "won"]


def test_many_concurrent_redeemers_on_two_store_handles(tmp_path: Path) -> None:
    """Eight threads, two connections to one file, a three-use token: exactly three win."""
    path = tmp_path / "shared.db"
    with SqliteStore(path) as one, SqliteStore(path) as two:
        created = EnrollmentTokens(one).create("acme", ["relay"], ttl=60, uses=3)
        handles = [EnrollmentTokens(one), EnrollmentTokens(two)]
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def redeem(index: int) -> None:
            barrier.wait(timeout=5)
            try:
                handles[index % 2].redeem(created.token)
                outcomes.append("won")
            except TokenUsedUpError:
                outcomes.append("used up")

        threads = [threading.Thread(target=redeem, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes.count("won") == 3
        assert outcomes.count("used up") == 5
