"""``ServedEnds``: the destination stream ends this node serves, by resume token, and the
tokens of those it let go.

A served end (a :class:`ResumableStream`) is kept while it may still be resumed.  Once it
finished, or stayed broken longer than the resume window, it is let go and its token
*retired*: remembered for twice the resume window and until the last route lease that
carried the stream here expires (``carried_by``), so a resume or a fresh open naming it
is refused as a replay (:mod:`.stream_router`).  At most ``RETIRED_LIMIT`` tokens.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from accessfabric.control.kernel.objects import RouteLease
from accessfabric.node.streams.resumable import ResumableStream, StreamNotResumed
from accessfabric.session.stream_state import StreamState

RETIRED_LIMIT = 65536
"""Resume tokens of let-go stream ends remembered at most (each for 2 resume windows, and
until the last route lease that carried the stream here expires)."""


class ServedEnds:
    def __init__(self, resume_window: float) -> None:
        self.resume_window = resume_window
        self.served: dict[bytes, ResumableStream] = {}
        """Destination stream ends by resume token, while they may still be resumed."""
        self._retired: OrderedDict[bytes, float] = OrderedDict()
        """Tokens of stream ends let go, with until when they are remembered: a resume or a
        fresh open of one is refused (a replay), never taken for a stream whose first path
        failed."""
        self._lease_ends: dict[bytes, float] = {}
        """Served tokens -> when (monotonic) the last route lease that carried an open or
        resume of the stream here expires: until then a relay could replay it."""

    def is_retired(self, token: bytes) -> bool:
        return token in self._retired

    @property
    def retired_tokens(self) -> frozenset[bytes]:
        """Tokens of let-go stream ends still remembered (their opens are refused)."""
        return frozenset(self._retired)

    def sweep(self, now: float) -> None:
        """Let go the ends that finished or stayed broken past the resume window."""
        for token, wrapper in list(self.served.items()):
            state = wrapper.connection.session.stream_state(wrapper.stream_id)
            done = state is None or state in (StreamState.CLOSED, StreamState.RESET)
            if wrapper.broken_since is not None:
                if now - wrapper.broken_since > self.resume_window:
                    wrapper.fail(StreamNotResumed(f"not resumed: {wrapper.broken_reason}"))
                    self._retire(token, now)
            elif wrapper.finished or done:
                self._retire(token, now)
        self.forget_retired(now)

    def forget_retired(self, now: float) -> None:
        """Forget let-go tokens whose time is up, and the oldest beyond RETIRED_LIMIT.

        Tokens are kept in the order they were let go, but their remember-until times
        are not ordered (each depends on its lease): past half the limit, expired ones
        hiding behind a long-lived first entry are found by a scan, so the limit only
        ever evicts tokens that still count when there really are that many."""
        retired = self._retired
        while retired and next(iter(retired.values())) < now:
            retired.popitem(last=False)
        if len(retired) > RETIRED_LIMIT // 2:
            for token in [token for token, until in retired.items() if until < now]:
                del retired[token]
        while len(retired) > RETIRED_LIMIT:
            retired.popitem(last=False)

    def _retire(self, token: bytes, now: float) -> None:
        del self.served[token]
        lease_end = self._lease_ends.pop(token, now)
        self._retired[token] = max(now + 2 * self.resume_window, lease_end)
        self._retired.move_to_end(token)

    def carried_by(self, token: bytes, lease: RouteLease) -> None:
        """Remember that ``lease`` carried an open or resume of stream ``token`` here: until
        it expires, a relay on it could send that open again (a replay)."""
        lease_end = time.monotonic() + max(0.0, lease.expires_ms / 1000 - time.time())
        self._lease_ends[token] = max(self._lease_ends.get(token, 0.0), lease_end)

    def remember_until(self, token: bytes, until: float) -> None:
        """Remember ``token`` at least until ``until`` (monotonic) once it is let go."""
        self._lease_ends[token] = max(self._lease_ends.get(token, 0.0), until)
