"""Per-tenant session admission on an accepting node (an entry of a fleet, issue 17).

An entry serves many tenants' devices.  Without a cap per tenant, one tenant that
connects many sessions (a flood, or a fleet gone wrong) takes every session slot and
byte of memory the entry has, and the other tenants' devices are refused by the global
caps.  :class:`TenantAdmission` counts the live sessions each tenant holds with this
node and refuses the one beyond ``max_sessions_per_tenant`` with GOAWAY
``ENHANCE_YOUR_CALM`` whose reason carries a retry hint (:func:`retry_hint_reason`,
``retry_after_ms=N``, jittered so refused devices do not all come back together).

The tenant is the one the peer's authority-signed node record (sent in HELLO) names; a
peer without a verified record counts as tenant ``""`` (one shared bucket, so unknown
peers cannot escape the cap by not presenting a record).  Only sessions this node
accepted count: sessions it dialled are its own business.

It runs as a data-plane event hook (after the data plane learnt the record on
``SessionReady``); ``Admission.tenants`` (node/serving/admission.py) holds the one instance
of a node.  Limits: ``[limits] max_sessions_per_tenant`` and
``tenant_retry_after`` (docs/config.md).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from accessfabric.errors import ErrorCode
from accessfabric.observe.log_rate import RateLimitedLog
from accessfabric.session import events as ev

if TYPE_CHECKING:
    from accessfabric.control.kernel.objects import NodeRecord
    from accessfabric.node.streams.connection import SessionConnection

log = logging.getLogger("accessfabric.node.serving.tenant_admission")

DEFAULT_MAX_SESSIONS_PER_TENANT = 2048
"""Sessions one tenant may hold with one node.  Measured (docs/benchmarks.md, "Fleet"):
an idle device session costs an entry about 270 KiB of RSS here, so 2048 sessions of one
tenant are about 550 MiB; a fleet larger than that per entry needs more entries."""
DEFAULT_TENANT_RETRY_AFTER = 5.0
"""Seconds the refused peer is told to wait (the hint is this times 1..1.5)."""
RETRY_JITTER = 0.5
REFUSAL = "tenant session limit"
_HINT = re.compile(r"retry_after_ms=(\d{1,9})")


def retry_hint_reason(what: str, retry_after: float) -> str:
    """A GOAWAY reason carrying the retry hint: ``"<what>; retry_after_ms=N"``."""
    return f"{what}; retry_after_ms={max(0, round(retry_after * 1000))}"


def retry_hint(reason: str) -> float | None:
    """Seconds a GOAWAY reason asks the peer to wait before it reconnects, if it says."""
    match = _HINT.search(reason)
    return int(match.group(1)) / 1000 if match else None


class TenantAdmission:
    """Live accepted sessions per tenant, and the refusal of one over the cap."""

    def __init__(
        self,
        max_sessions: int = DEFAULT_MAX_SESSIONS_PER_TENANT,
        retry_after: float = DEFAULT_TENANT_RETRY_AFTER,
        *,
        rng: random.Random | None = None,
        log_interval: float = 10.0,
    ) -> None:
        self.max_sessions = max_sessions
        self.retry_after = retry_after
        self._rng = rng or random.Random()
        self._held: dict[str, set[SessionConnection]] = {}
        self._tenant_of: dict[SessionConnection, str] = {}
        self.refused: dict[str, int] = {}
        """Sessions refused per tenant (status, metrics)."""
        self._log = RateLimitedLog(log, interval=log_interval)

    def sessions(self, tenant: str) -> int:
        """Live sessions ``tenant`` holds with this node."""
        self._prune(tenant)
        return len(self._held.get(tenant, ()))

    def _prune(self, tenant: str) -> None:
        for gone in [c for c in self._held.get(tenant, ()) if c.is_closed]:
            self._release(gone)  # a session that ended without an event seen here

    def admit(self, connection: SessionConnection, tenant: str, now: float) -> bool:
        """Count ``connection`` for ``tenant``; False (and GOAWAY) when it is one too many."""
        self._prune(tenant)
        held = self._held.setdefault(tenant, set())
        if len(held) >= self.max_sessions:
            self.refused[tenant] = self.refused.get(tenant, 0) + 1
            wait = self.retry_after * (1.0 + self._rng.uniform(0.0, RETRY_JITTER))
            self._log.log(
                (tenant, REFUSAL), logging.WARNING,
                "session refused reason=%s tenant=%s sessions=%d",
                REFUSAL, tenant or "-", len(held), now=now,
            )  # fmt: skip
            connection.refuse(
                ErrorCode.ENHANCE_YOUR_CALM,
                retry_hint_reason(f"{REFUSAL} ({self.max_sessions}) reached", wait),
            )
            return False
        held.add(connection)
        self._tenant_of[connection] = tenant
        return True

    def _release(self, connection: SessionConnection) -> None:
        tenant = self._tenant_of.pop(connection, None)
        if tenant is not None:
            held = self._held.get(tenant)
            if held is not None:
                held.discard(connection)
                if not held:
                    del self._held[tenant]

    def hook(
        self, record_of: Callable[[str], NodeRecord | None], clock: Callable[[], float]
    ) -> Callable[[SessionConnection, ev.Event], None]:
        """A data-plane event hook: admit accepted sessions when ready, release at the end.

        ``record_of``: the verified node record of a peer (``ServiceAccess.record_of``,
        learnt from HELLO by the data plane before hooks run)."""

        def on_event(connection: SessionConnection, event: ev.Event) -> None:
            kind = type(event)
            if kind is ev.SessionReady and not connection.info.dialer:
                assert isinstance(event, ev.SessionReady)
                record = record_of(event.peer_node_id)
                self.admit(connection, record.tenant if record else "", clock())
            elif kind is ev.SessionTerminated:
                self._release(connection)

        return on_event

    def counts(self) -> dict[str, int]:
        """Live sessions per tenant holding any (metrics)."""
        return {t: n for t in sorted(self._held) if (n := self.sessions(t))}

    def status(self) -> dict[str, object]:
        return {
            "max_sessions_per_tenant": self.max_sessions,
            "sessions": {t or "-": self.sessions(t) for t in sorted(self._held)},
            "refused": {t or "-": n for t, n in sorted(self.refused.items())},
        }
