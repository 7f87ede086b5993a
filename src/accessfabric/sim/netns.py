"""A multi-host test network built from Linux network namespaces.

::

    with Topology(prefix="af") as topo:
        topo.add_host("phone")
        topo.add_host("entry", forwarding=True)
        topo.add_host("exit")
        topo.link("phone", "entry")
        topo.link("entry", "exit")
        topo.route("phone", "default", via="entry")
        topo.route("exit", "default", via="entry")
        topo.set_loss("entry", "exit", 5.0)
        topo.run("phone", ["ping", "-c", "1", topo.host_addr("exit", "entry")])

Every host is a namespace named ``{prefix}-{pid}-{tag}-{host}``; every link is a veth
pair (or, for :meth:`Topology.emulated_link`, two TUN devices joined by the user-space
:class:`~accessfabric.sim.link_emulator.TunBridge`) named ``veth{i}`` / ``tun{i}`` at
both ends, with addresses from a private /30 and /64 that exist only inside the two
namespaces.  Leaving the ``with`` block stops the bridges, kills the processes and
deletes the namespaces, which removes their devices, routes, qdiscs and nft tables.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import secrets
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Literal

from accessfabric.sim.addressing import (
    DEFAULT_V4_BASE,
    DEFAULT_V6_BASE,
    AddressPlan,
    LinkAddresses,
)
from accessfabric.sim.availability import (
    NetnsUnavailable,
    netns_unavailable_reason,
    require_netns,
    tun_unavailable_reason,
)
from accessfabric.sim.commands import DEFAULT_TIMEOUT_S, CommandError, run_command
from accessfabric.sim.delay_line import DelayLine
from accessfabric.sim.impairments import (
    clear_qdisc_argv,
    delete_loss_ruleset,
    loss_ruleset,
    tbf_argv,
)
from accessfabric.sim.link_emulator import TunBridge
from accessfabric.sim.namespaces import (
    NamespaceName,
    check_host,
    check_prefix,
    delete_namespace,
    stale_namespaces,
)
from accessfabric.sim.processes import stop_processes
from accessfabric.sim.tun import TunDevice, open_tun
from accessfabric.sim.units import parse_duration, parse_rate

__all__ = [
    "CommandError",
    "Link",
    "NetnsUnavailable",
    "Topology",
    "netns_unavailable_reason",
    "require_netns",
    "tun_unavailable_reason",
]

Family = Literal[4, 6]
_CONFS = ("all", "default")
# What ``tc qdisc del ... root`` says when the root qdisc is already the default one.
_NO_ROOT_QDISC = ("handle of zero", "No such file or directory")
_OPEN_TOPOLOGIES: weakref.WeakSet[Topology] = weakref.WeakSet()


@dataclass(frozen=True)
class Link:
    """A point-to-point link between hosts ``a`` and ``b``; ``dev`` is its name at both ends."""

    index: int
    a: str
    b: str
    dev: str
    addresses: LinkAddresses
    bridge: TunBridge | None = None

    def address(self, host: str, family: Family = 4) -> str:
        """The address of ``host``'s end of this link."""
        if host not in (self.a, self.b):
            raise KeyError(f"{host!r} is not an end of link {self.a}<->{self.b}")
        a_end = host == self.a
        if family == 4:
            return str((self.addresses.v4_a if a_end else self.addresses.v4_b).ip)
        return str((self.addresses.v6_a if a_end else self.addresses.v6_b).ip)


class Topology:
    """Hosts (namespaces), links between them, routes and impairments; a context manager."""

    def __init__(
        self,
        prefix: str = "af",
        *,
        v4_base: str = DEFAULT_V4_BASE,
        v6_base: str = DEFAULT_V6_BASE,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.tag = secrets.token_hex(3)
        self._plan = AddressPlan(v4_base, v6_base)
        self._hosts: dict[str, str] = {}
        self._links: dict[frozenset[str], Link] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        _OPEN_TOPOLOGIES.add(self)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Topology:
        require_netns()
        self.cleanup_stale(self.prefix)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self._teardown()
        if not errors:
            return
        message = "topology teardown failed:\n" + "\n".join(errors)
        if exc is not None:
            exc.add_note(message)
            return
        raise RuntimeError(message)

    def close(self) -> None:
        """Tear everything down; raise ``RuntimeError`` listing what could not be removed."""
        errors = self._teardown()
        if errors:
            raise RuntimeError("topology teardown failed:\n" + "\n".join(errors))

    @staticmethod
    def cleanup_stale(prefix: str = "af") -> list[str]:
        """Delete namespaces of ``prefix`` left by runs whose process is gone."""
        stale = stale_namespaces(prefix)
        for ns in stale:
            delete_namespace(ns)
        return stale

    # -- building --------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    @property
    def namespaces(self) -> list[str]:
        return list(self._hosts.values())

    def ns(self, host: str) -> str:
        """The namespace name of ``host``."""
        try:
            return self._hosts[host]
        except KeyError:
            raise KeyError(f"unknown host {host!r} (hosts: {sorted(self._hosts)})") from None

    def add_host(self, host: str, *, forwarding: bool = False) -> str:
        """Create ``host`` as a namespace with ``lo`` up; return the namespace name."""
        self._check_open()
        if check_host(host) in self._hosts:
            raise ValueError(f"host {host!r} already exists")
        ns = str(NamespaceName(self.prefix, os.getpid(), self.tag, host))
        run_command(["ip", "netns", "add", ns])
        self._hosts[host] = ns
        run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
        # No duplicate address detection: a tentative link-local address keeps a
        # forwarding host from routing IPv6 for about two seconds after a link comes up.
        self.run(host, ["sysctl", "-qw", *(f"net.ipv6.conf.{c}.accept_dad=0" for c in _CONFS)])
        if forwarding:
            self.enable_forwarding(host)
        return ns

    def enable_forwarding(self, host: str) -> None:
        """Let ``host`` route packets between its links (IPv4 and IPv6)."""
        self.run(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])

    def link(self, a: str, b: str) -> Link:
        """Join ``a`` and ``b`` with a veth pair and address both ends."""
        index, ns_a, ns_b = self._new_link_slot(a, b)
        dev = f"veth{index}"
        veth = ["type", "veth", "peer", "name", dev, "netns", ns_b]
        run_command(["ip", "link", "add", dev, "netns", ns_a, *veth])
        return self._finish_link(Link(index, a, b, dev, self._plan.link(index)))

    def emulated_link(
        self,
        a: str,
        b: str,
        *,
        delay: str | float = "20ms",
        jitter: str | float = 0.0,
        loss_percent: float = 0.0,
        rate: str | float | None = None,
        max_backlog: str | float = "50ms",
        seed: int = 0,
    ) -> Link:
        """Join ``a`` and ``b`` through two TUN devices and a :class:`TunBridge`.

        ``delay``, ``jitter``, ``loss_percent`` and ``rate`` apply to each direction
        separately (so the round trip sees twice the delay).  The directions use seeds
        ``seed`` and ``seed + 1``.
        """
        index, ns_a, ns_b = self._new_link_slot(a, b)
        dev = f"tun{index}"
        tuns: list[TunDevice] = []
        try:
            for ns in (ns_a, ns_b):
                tuns.append(open_tun(f"{self.prefix}t%d"))
                run_command(["ip", "link", "set", "dev", tuns[-1].name, "netns", ns, "name", dev])
            lines = [
                DelayLine(
                    parse_duration(delay),
                    parse_duration(jitter),
                    loss_percent / 100.0,
                    None if rate is None else parse_rate(rate),
                    seed=seed + direction,
                    max_backlog_s=parse_duration(max_backlog),
                )
                for direction in (0, 1)
            ]
            bridge = TunBridge(tuns[0].fd, tuns[1].fd, lines[0], lines[1], name=f"bridge-{dev}")
        except BaseException:
            for tun in tuns:
                tun.close()
            raise
        link = Link(index, a, b, dev, self._plan.link(index), bridge=bridge.start())
        return self._finish_link(link)

    def route(self, host: str, dest: str, via: str) -> None:
        """Route ``dest`` (a CIDR or ``"default"`` / ``"default6"``) from ``host`` through
        its neighbour ``via``."""
        family: Family
        if dest in ("default", "default6"):
            family = 6 if dest == "default6" else 4
            dest = "default"
        else:
            family = 6 if ipaddress.ip_network(dest, strict=False).version == 6 else 4
        gateway = self.host_addr(via, host, family=family)
        run_command(
            ["ip", f"-{family}", "-n", self.ns(host), "route", "replace", dest, "via", gateway]
        )

    # -- looking up ------------------------------------------------------------------

    def link_between(self, a: str, b: str) -> Link:
        try:
            return self._links[frozenset((a, b))]
        except KeyError:
            raise KeyError(f"no link between {a!r} and {b!r}") from None

    def host_addr(self, host: str, peer: str, *, family: Family = 4) -> str:
        """The address of ``host`` on its link to ``peer``."""
        return self.link_between(host, peer).address(host, family)

    def host_dev(self, host: str, peer: str) -> str:
        """The interface of ``host`` that faces ``peer``."""
        self.ns(host)
        return self.link_between(host, peer).dev

    # -- running things --------------------------------------------------------------

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` and capture its text output.

        Unlike :func:`subprocess.run`, ``check`` defaults to true: a failure raises
        :class:`CommandError` with the command line and its stderr.
        """
        argv = ["ip", "netns", "exec", self.ns(host), *argv]
        return run_command(argv, check=check, timeout=timeout, input=input)

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` in its own session; it is killed at teardown."""
        self._check_open()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    # -- impairments -----------------------------------------------------------------

    def set_rate(
        self,
        host: str,
        peer: str,
        rate: str = "800mbit",
        burst: str = "256kb",
        latency: str = "50ms",
    ) -> None:
        """Limit what ``host`` sends towards ``peer`` with a ``tc tbf`` token bucket."""
        run_command(tbf_argv(self.ns(host), self.host_dev(host, peer), rate, burst, latency))

    def set_loss(self, host: str, peer: str, percent: float) -> None:
        """Drop ``percent`` % of what ``host`` sends towards ``peer`` (nftables ``numgen``,
        on arrival in ``peer``'s namespace, so ``host``'s TCP sees network loss);
        ``0`` removes the loss."""
        dev = self.host_dev(peer, host)
        script = delete_loss_ruleset(dev) if percent == 0 else loss_ruleset(dev, percent)
        self.run(peer, ["nft", "-f", "-"], input=script)

    def clear_impairments(self, host: str, peer: str) -> None:
        """Remove the rate limit and the loss of the direction ``host -> peer``."""
        self.set_loss(host, peer, 0)
        done = run_command(clear_qdisc_argv(self.ns(host), self.host_dev(host, peer)), check=False)
        if done.returncode != 0 and not any(text in done.stderr for text in _NO_ROOT_QDISC):
            raise CommandError(done.args, done.returncode, done.stdout, done.stderr)

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("topology is already torn down")

    def _new_link_slot(self, a: str, b: str) -> tuple[int, str, str]:
        self._check_open()
        if a == b:
            raise ValueError(f"cannot link {a!r} to itself")
        ns_a, ns_b = self.ns(a), self.ns(b)
        if frozenset((a, b)) in self._links:
            raise ValueError(f"{a!r} and {b!r} are already linked")
        return len(self._links), ns_a, ns_b

    def _finish_link(self, link: Link) -> Link:
        self._links[frozenset((link.a, link.b))] = link
        for host in (link.a, link.b):
            commands = [
                f"addr add {link.address(host, 4)}/30 dev {link.dev}",
                f"addr add {link.address(host, 6)}/64 dev {link.dev} nodad",
                f"link set {link.dev} up",
            ]
            run_command(["ip", "-n", self.ns(host), "-batch", "-"], input="\n".join(commands))
        self._wait_until_up(link)
        return link

    def _wait_until_up(self, link: Link, timeout_s: float = 5.0) -> None:
        """Wait for the kernel's link watch to mark both ends running.

        Until it does, the device keeps its ``noop`` qdisc and silently drops what it
        sends; the link watch may defer that work by up to a second.
        """
        deadline = time.monotonic() + timeout_s
        for host in (link.a, link.b):
            argv = ["ip", "-n", self.ns(host), "-o", "link", "show", "dev", link.dev]
            while True:
                state = run_command(argv).stdout
                if "LOWER_UP" in state and "NO-CARRIER" not in state:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{link.dev} of {host!r} not up after {timeout_s}s: {state}")
                time.sleep(0.01)

    def _teardown(self) -> list[str]:
        if self._closed:
            return []
        self._closed = True
        _OPEN_TOPOLOGIES.discard(self)
        errors: list[str] = []
        for link in self._links.values():
            if link.bridge is not None:
                try:
                    link.bridge.stop()
                except Exception as exc:
                    errors.append(f"{link.dev}: {exc}")
        stop_processes(self._procs)
        for ns in self._hosts.values():
            try:
                delete_namespace(ns)
            except CommandError as exc:
                errors.append(str(exc))
        return errors


@atexit.register
def _close_forgotten_topologies() -> None:
    for topology in list(_OPEN_TOPOLOGIES):
        topology._teardown()
