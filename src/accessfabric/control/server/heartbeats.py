"""Heartbeats: the latest facts of every node, their health, and write-behind persistence.

The serving replica keeps each node's latest heartbeat in memory (a heartbeat is ingested
with no store write) and persists a node's entry at most every ``persist_interval``
seconds, at ``/heartbeats/<node id>``, so a restarted control plane (or the listing of
another replica) knows when each node was last heard of.

Health is a pure function of heartbeat age and facts (:func:`assess`):

* ``unreachable`` -- never heard of, or silent for ``unreachable_after`` seconds;
* ``degraded`` -- late (silent for ``late_after``), or under pressure (CPU, memory or
  sockets at ``pressure_limit``, queue depth at ``queue_limit``), or a phone low on battery
  and not charging, or still holding an older node record than the current one;
* ``healthy`` -- otherwise.

The table also keeps a **visibility generation** (:meth:`HeartbeatTable.visibility`): it
moves when a node becomes visible in directories (its first heartbeat, or its return
from ``unreachable``), when one turns ``unreachable`` (found lazily through a heap of
deadlines, so asking is cheap), and when a live node's directory-visible facts change
(region, endpoints, transports, the set of peers it measured, and the relay facts
placement selects on: opt-in, charging, metered, trust tier).  Together with the registry
generation it makes the directory's version (:mod:`accessfabric.control.server.directory`).

**Silence this replica caused does not count** (ADR 0061).  A node's silence is counted
from its last heartbeat, or from the moment this replica could take heartbeats again,
whichever is later, for the nodes that were live when it stopped:

* while paused (:meth:`HeartbeatTable.pause`; its store lost, every request answered
  503) no node ages, and :meth:`HeartbeatTable.resume` gives every node live at the
  pause a new start at the resume (one ``unreachable_after`` window for its next
  heartbeat to land);
* the first :meth:`HeartbeatTable.load` (a replica starting) does the same for the nodes
  that were live when the store last heard of anyone (the newest persisted heartbeat):
  the time the control plane was down is not theirs either.

A node that was already unreachable gets nothing, and a node that really died is
unreachable one window after the resume: the grace never outlasts one window.
"""

from __future__ import annotations

import heapq
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from accessfabric.control.client.facts import (
    FactsError,
    HeartbeatFacts,
    PeerTable,
    parse_facts,
    peer_ids,
)
from accessfabric.control.server.directory_log import ChangeLog
from accessfabric.control.server.generations import PartitionGenerations
from accessfabric.control.server.store.base import Change, ChangeKind, Clock, Store

KEY_PREFIX = "/heartbeats/"
DEFAULT_INTERVAL = 10.0
DEFAULT_PERSIST_INTERVAL = 30.0


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthRules:
    """Thresholds of :func:`assess`; the defaults suit a 10 s heartbeat interval."""

    interval: float = DEFAULT_INTERVAL
    late_after: float = 2.5 * DEFAULT_INTERVAL
    unreachable_after: float = 4.5 * DEFAULT_INTERVAL
    pressure_limit: float = 0.9
    queue_limit: int = 10_000
    low_battery_percent: float = 15.0

    @classmethod
    def for_interval(cls, interval: float) -> HealthRules:
        return cls(interval=interval, late_after=2.5 * interval, unreachable_after=4.5 * interval)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatState:
    facts: HeartbeatFacts
    received_at: float
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    health: Health
    reasons: tuple[str, ...]
    age: float | None
    """Seconds since the last heartbeat (``None``: never heard of)."""


def assess(
    state: HeartbeatState | None,
    now: float,
    rules: HealthRules,
    record_revision: int = 0,
    *,
    silence: float | None = None,
) -> HealthReport:
    """The health of a node from its latest heartbeat (``None``: none yet); ``silence``:
    the seconds of it counted against the node (default its age; less after a replica's
    own outage: :meth:`HeartbeatTable.silence`)."""
    if state is None:
        return HealthReport(health=Health.UNREACHABLE, reasons=("no heartbeat yet",), age=None)
    age = max(0.0, now - state.received_at)
    counted = age if silence is None else min(age, max(0.0, silence))
    if counted >= rules.unreachable_after:
        return HealthReport(
            health=Health.UNREACHABLE,
            reasons=(f"no heartbeat for {age:.0f} s (limit {rules.unreachable_after:g} s)",),
            age=age,
        )
    facts = state.facts
    reasons: list[str] = []
    if counted >= rules.late_after:
        reasons.append(f"heartbeat late: {age:.0f} s old (interval {rules.interval:g} s)")
    for name, value in (
        ("cpu", facts.cpu),
        ("memory", facts.memory),
        ("socket", facts.socket_pressure),
    ):
        if value >= rules.pressure_limit:
            reasons.append(f"{name} pressure {value:.0%}")
    if facts.queue_depth >= rules.queue_limit:
        reasons.append(f"queue depth {facts.queue_depth}")
    low = facts.battery_percent is not None and facts.battery_percent < rules.low_battery_percent
    if low and not facts.charging:
        reasons.append(f"battery {facts.battery_percent:.0f} % and not charging")
    if facts.record_revision and facts.record_revision < record_revision:
        reasons.append(
            f"holds node record revision {facts.record_revision}, current is {record_revision}"
        )
    health = Health.DEGRADED if reasons else Health.HEALTHY
    return HealthReport(health=health, reasons=tuple(reasons), age=age)


def compact(facts: HeartbeatFacts) -> HeartbeatFacts:
    """``facts`` as the table keeps them: the measured peers packed (:class:`PeerTable`,
    ~100 B per node instead of ~790 B; ADR 0038)."""
    if isinstance(facts.peers, PeerTable):
        return facts
    return replace(facts, peers=PeerTable(facts.peers))


def _visible(facts: HeartbeatFacts) -> tuple[object, ...]:
    """The facts a directory shows or selects on (health and RTT values excluded): a
    mobile directory's placement leaves out entries the planner refuses as a hop, so
    the relay facts that decide it (opt-in, charging, metered, trust tier) count too."""
    peers = frozenset(peer_ids(facts.peers))
    relay = (facts.relay_opt_in, facts.charging, facts.metered, facts.trust_tier)
    return (facts.region, facts.endpoints, facts.transports, peers, relay)


class HeartbeatTable:
    """Latest heartbeat per node, in memory, persisted behind the write path."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = time.time,
        rules: HealthRules | None = None,
        persist_interval: float = DEFAULT_PERSIST_INTERVAL,
        share_interval: float | None = None,
        is_shared: Callable[[str], bool] | None = None,
        tenant_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """``share_interval`` (several replicas, ADR 0019): nodes for which ``is_shared``
        says yes (the ones routes go through) are persisted at least this often, so every
        replica sees them live; every node is persisted at once when its visible facts
        (region, endpoints, transports, peers) change; others every ``persist_interval``.
        """
        self._store = store
        self._share_interval = share_interval
        self._is_shared = is_shared
        self._persisted_visible: dict[str, tuple[object, ...]] = {}
        self._clock = clock
        self.rules = rules or HealthRules()
        self._persist_interval = persist_interval
        self._states: dict[str, HeartbeatState] = {}
        self._persisted_at: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._tenant_of = tenant_of
        self._generations = PartitionGenerations()
        """Moved by every heartbeat: a route coordinator's snapshot is rebuilt after its
        partition's moves (ADR 0043)."""
        self._visibility = 0
        self.epoch = secrets.token_hex(8)
        """Names this table: visibility generations of two tables (a restart) never compare."""
        self._live: dict[str, float] = {}
        """Nodes counted as not ``unreachable``, and the deadline of their heap entry."""
        self._deadlines: list[tuple[float, str]] = []
        """Heap of (when a live node turns unreachable unless heard of, node id)."""
        self._by_region: dict[str, set[str]] = {}
        """Node ids by the region of their last heartbeat (``default`` for none)."""
        self.changes = ChangeLog()
        """Which nodes' directory entries changed, in order: directory deltas
        (:mod:`accessfabric.control.server.directory_log`).  Every move of the visibility
        generation notes its node; the registry notes record changes here too."""
        self._grace: dict[str, float] = {}
        """Per node: the resume its silence is counted from, when later than its last
        heartbeat (see the module docstring; ADR 0061)."""
        self._paused_at: float | None = None
        """Since when this replica cannot take heartbeats (``None``: it can)."""
        self._loaded = False

    def load(self) -> int:
        """Read the persisted heartbeats (at start-up, and when a replica's store is back);
        the number loaded.  An entry older than the heartbeat held in memory is skipped:
        the persisted digest lags the last heartbeat by up to a persist interval, and
        taking it would age the node by that much.  The first load is a start: see the
        module docstring."""
        loaded = 0
        newest: float | None = None
        for entry in self._store.range(KEY_PREFIX).entries:
            node_id = entry.key.removeprefix(KEY_PREFIX)
            try:
                document = json.loads(entry.value)
                facts = compact(parse_facts(document["facts"]))
                received_at = float(document["received_at"])
            except (ValueError, KeyError, TypeError, FactsError):
                continue
            newest = received_at if newest is None else max(newest, received_at)
            previous = self._states.get(node_id)
            if previous is not None and previous.received_at >= received_at:
                continue
            self._region_moved(node_id, previous, facts)
            count = 0 if previous is None else previous.count
            self._states[node_id] = HeartbeatState(
                facts=facts, received_at=received_at, count=count
            )
            self._persisted_at[node_id] = received_at
            self._set_live(node_id, received_at)
            loaded += 1
        if not self._loaded and newest is not None:  # a start: the store heard last at newest
            self._grant_grace(newest, self._clock())
        self._loaded = True
        self._generations.moved(None)
        self._visibility += 1
        self.changes.reset()  # everything may have moved: every node fetches in full
        return loaded

    def now(self) -> float:
        """The table's clock."""
        return self._clock()

    def pause(self, since: float | None = None) -> None:
        """This replica cannot take heartbeats (its store is lost) since ``since`` (default
        now; earlier when the loss was found late): no node ages until :meth:`resume`."""
        if self._paused_at is None:
            now = self._clock()
            self._paused_at = now if since is None else min(since, now)

    def resume(self, now: float | None = None) -> None:
        """This replica takes heartbeats again: every node live when it paused is counted
        silent from ``now`` (one ``unreachable_after`` window for its next heartbeat)."""
        paused_at, self._paused_at = self._paused_at, None
        if paused_at is not None:
            self._grant_grace(paused_at, self._clock() if now is None else now)

    def _grant_grace(self, since: float, now: float) -> None:
        """Count every node live at ``since`` silent from ``now`` on."""
        after = self.rules.unreachable_after
        for node_id, state in self._states.items():
            heard = self._heard(node_id, state)
            if heard + after <= since or heard >= now:
                continue  # unreachable before this replica stopped, or heard of since
            self._grace[node_id] = now
            if node_id not in self._live:  # swept meanwhile: visible again
                self._schedule(node_id, now + after)
                self._visibility += 1
                self.changes.note(node_id)
        self._generations.moved(None)  # planners' snapshots rebuild with them

    def _heard(self, node_id: str, state: HeartbeatState) -> float:
        """When ``node_id``'s silence starts counting: its last heartbeat, or later."""
        grace = self._grace.get(node_id)
        return state.received_at if grace is None else max(grace, state.received_at)

    def silence(self, node_id: str, now: float) -> float | None:
        """Seconds of silence counted against ``node_id`` at ``now`` (``None``: never heard
        of): from its last heartbeat or this replica's resume, with no time counted while
        paused."""
        state = self._states.get(node_id)
        if state is None:
            return None
        paused_at = self._paused_at
        until = now if paused_at is None else min(now, paused_at)
        return max(0.0, until - self._heard(node_id, state))

    def live(self, node_id: str, now: float) -> bool:
        """``node_id`` is not ``unreachable`` at ``now`` (what planners and directories
        show)."""
        silence = self.silence(node_id, now)
        return silence is not None and silence < self.rules.unreachable_after

    def _due(self, node_id: str, state: HeartbeatState, now: float) -> bool:
        age = now - self._persisted_at.get(node_id, -1e18)
        if self._share_interval is None:
            return age >= self._persist_interval
        if self._persisted_visible.get(node_id) != _visible(state.facts):
            return True  # a material change: other replicas plan with it
        if self._is_shared is not None and self._is_shared(node_id):
            return age >= self._share_interval
        return age >= self._persist_interval

    def apply_change(self, change: Change) -> bool:
        """Fold a heartbeat entry another replica persisted (seen in the store's watch);
        ``True`` if it was newer than what this replica holds."""
        node_id = change.key.removeprefix(KEY_PREFIX)
        if change.kind is ChangeKind.DELETE:  # the node was removed through another replica
            known = node_id in self._states
            self.forget(node_id)
            return known
        try:
            document = json.loads(change.value)
            facts = compact(parse_facts(document["facts"]))
            received_at = float(document["received_at"])
        except (ValueError, KeyError, TypeError, FactsError):
            return False
        previous = self._states.get(node_id)
        if previous is not None and previous.received_at >= received_at:
            return False
        # ``count`` is this replica's own tally; a node heard of only through another
        # replica's digest counts as heard once
        self._states[node_id] = HeartbeatState(
            facts=facts, received_at=received_at, count=max(1, previous.count if previous else 0)
        )
        self._region_moved(node_id, previous, facts)
        self._persisted_at[node_id] = received_at
        self._persisted_visible[node_id] = _visible(facts)
        self._dirty.discard(node_id)  # another replica holds it; nothing to write here
        self._moved(node_id)
        returning = previous is None or node_id not in self._live
        if previous is None or returning or _visible(previous.facts) != _visible(facts):
            self._visibility += 1
            self.changes.note(node_id)
        self._set_live(node_id, received_at)
        return True

    def record(self, node_id: str, facts: HeartbeatFacts, now: float | None = None) -> None:
        """Take one heartbeat (no store write; :meth:`flush` persists)."""
        when = self._clock() if now is None else now
        facts = compact(facts)
        previous = self._states.get(node_id)
        count = 1 if previous is None else previous.count + 1
        self._states[node_id] = HeartbeatState(facts=facts, received_at=when, count=count)
        if self._grace:
            self._grace.pop(node_id, None)  # heard of: its own heartbeat counts again
        self._region_moved(node_id, previous, facts)
        self._dirty.add(node_id)
        self._moved(node_id)
        returning = previous is None or node_id not in self._live
        if previous is None or returning or _visible(previous.facts) != _visible(facts):
            self._visibility += 1
            self.changes.note(node_id)
        self._set_live(node_id, when)

    @property
    def generation(self) -> int:
        """Moves with every heartbeat taken (the whole-fleet planner rebuilds on it)."""
        return self._generations.generation

    def tenant_generation(self, tenant: str) -> int:
        """Moves with every heartbeat of a node of ``tenant``, not with another tenant's
        (a route coordinator's snapshot holds one partition: ADR 0043)."""
        return self._generations.of(tenant)

    def _moved(self, node_id: str) -> None:
        self._generations.moved(None if self._tenant_of is None else self._tenant_of(node_id))

    def _region_moved(
        self, node_id: str, previous: HeartbeatState | None, facts: HeartbeatFacts | None
    ) -> None:
        old = (previous.facts.region or "default") if previous is not None else None
        new = (facts.region or "default") if facts is not None else None
        if old == new:
            return
        if old is not None:
            members = self._by_region.get(old)
            if members is not None:
                members.discard(node_id)
                if not members:
                    del self._by_region[old]
        if new is not None:
            self._by_region.setdefault(new, set()).add(node_id)

    def in_region(self, region: str) -> set[str]:
        """Ids of the nodes whose last heartbeat named ``region`` (live or not)."""
        return self._by_region.get(region or "default", set())

    def _set_live(self, node_id: str, received_at: float) -> None:
        if node_id not in self._live:  # else its entry is moved on when it comes up
            self._schedule(node_id, received_at + self.rules.unreachable_after)

    def _schedule(self, node_id: str, deadline: float) -> None:
        self._live[node_id] = deadline
        heapq.heappush(self._deadlines, (deadline, node_id))

    def visibility(self, now: float) -> int:
        """The visibility generation at ``now`` (see the module docstring)."""
        if self._paused_at is not None:
            return self._visibility  # nobody turns unreachable while paused
        after = self.rules.unreachable_after
        while self._deadlines and self._deadlines[0][0] <= now:
            due, node_id = heapq.heappop(self._deadlines)
            if self._live.get(node_id) != due:
                continue  # forgotten, or a stale entry
            state = self._states.get(node_id)
            deadline = self._heard(node_id, state) + after if state is not None else due
            if deadline > now:  # heard of since: wait for the new deadline
                self._schedule(node_id, deadline)
                continue
            del self._live[node_id]
            self._visibility += 1
            self.changes.note(node_id)
        return self._visibility

    def get(self, node_id: str) -> HeartbeatState | None:
        return self._states.get(node_id)

    def remove(self, node_id: str) -> None:
        """Forget a removed node here and delete its shared entry from the store, so other
        replicas (watching) and later loads forget it too."""
        self.forget(node_id)
        self._store.delete(KEY_PREFIX + node_id)

    def forget(self, node_id: str) -> None:
        self._region_moved(node_id, self._states.pop(node_id, None), None)
        self._grace.pop(node_id, None)
        self._persisted_at.pop(node_id, None)
        self._persisted_visible.pop(node_id, None)
        self._dirty.discard(node_id)
        self._moved(node_id)
        if self._live.pop(node_id, None) is not None:  # its heap entry is skipped
            self._visibility += 1
            self.changes.note(node_id)

    def __iter__(self) -> Iterator[tuple[str, HeartbeatState]]:
        return iter(list(self._states.items()))

    def __len__(self) -> int:
        return len(self._states)

    def health(self, node_id: str, now: float, record_revision: int = 0) -> HealthReport:
        silence = self.silence(node_id, now)
        return assess(self._states.get(node_id), now, self.rules, record_revision, silence=silence)

    def flush(self, now: float | None = None, *, force: bool = False) -> int:
        """Persist dirty entries not persisted for ``persist_interval``; the number written."""
        batch = self.take_due(now, force=force)
        if batch:
            try:
                self._store.put_many(batch)  # one transaction: one commit per flush
            except Exception:
                self.unwritten(batch)
                raise
        return len(batch)

    def take_due(self, now: float | None = None, *, force: bool = False) -> list[tuple[str, bytes]]:
        """The entries :meth:`flush` would write now, marked written (memory only: a caller
        that writes them elsewhere, e.g. in a thread, calls :meth:`unwritten` on failure)."""
        when = self._clock() if now is None else now
        batch: list[tuple[str, bytes]] = []
        for node_id in list(self._dirty):
            state = self._states.get(node_id)
            if not force and state is not None and not self._due(node_id, state, when):
                continue
            self._dirty.discard(node_id)
            if state is None:
                continue
            if self._share_interval is not None:
                self._persisted_visible[node_id] = _visible(state.facts)
            document = {"received_at": state.received_at, "facts": state.facts.to_json()}
            batch.append((KEY_PREFIX + node_id, json.dumps(document).encode()))
            self._persisted_at[node_id] = when
        return batch

    def unwritten(self, batch: list[tuple[str, bytes]]) -> None:
        """A batch from :meth:`take_due` did not reach the store: write it again later."""
        for key, _ in batch:
            node_id = key.removeprefix(KEY_PREFIX)
            self._dirty.add(node_id)
            self._persisted_at.pop(node_id, None)
            self._persisted_visible.pop(node_id, None)
