"""Two sessions paired in memory, pumped by hand (aioquic's ``roundtrip``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.session import Event, Session, SessionConfig
from accessfabric.session import events as ev

_KEYS = [NodeKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3)]


def authenticator(index: int, expected_peer: int | None = None) -> Ed25519Authenticator:
    expected = None if expected_peer is None else _KEYS[expected_peer].node_id
    return Ed25519Authenticator(_KEYS[index], expected_peer_id=expected)


@dataclass
class Pair:
    a: Session
    b: Session
    now: float = 0.0
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)

    def pump(self, rounds: int = 10_000) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(rounds):
            to_b = self.a.data_to_send(now=self.now)
            to_a = self.b.data_to_send(now=self.now)
            if not to_b and not to_a:
                return
            if to_b:
                self.events_b += self.b.receive_data(to_b, self.now)
            if to_a:
                self.events_a += self.a.receive_data(to_a, self.now)
        raise AssertionError("pair did not settle")

    def take(self, side: str) -> list[Event]:
        events = self.events_a if side == "a" else self.events_b
        taken = list(events)
        events.clear()
        return taken


def make_pair(
    config_a: SessionConfig | None = None,
    config_b: SessionConfig | None = None,
    *,
    binding: bytes = b"channel",
    handshake: bool = True,
) -> Pair:
    a = Session(
        dialer=True,
        authenticator=authenticator(0),
        random_bytes=secrets.token_bytes,
        config=config_a,
        channel_binding=binding,
        now=0.0,
    )
    b = Session(
        dialer=False,
        authenticator=authenticator(1),
        random_bytes=secrets.token_bytes,
        config=config_b,
        channel_binding=binding,
        now=0.0,
    )
    pair = Pair(a, b)
    if handshake:
        pair.pump()
        assert any(isinstance(e, ev.SessionReady) for e in pair.take("a"))
        assert any(isinstance(e, ev.SessionReady) for e in pair.take("b"))
    return pair


def received_bytes(events: list[Event], stream_id: int) -> bytes:
    return b"".join(
        bytes(e.data) for e in events if isinstance(e, ev.DataReceived) and e.stream_id == stream_id
    )
