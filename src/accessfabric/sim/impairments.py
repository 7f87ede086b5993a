"""Kernel impairments of one interface direction: ``tc tbf`` rate and nftables loss.

Loss of the direction A -> B drops packets as they *arrive* at B: one nftables table per
interface in the receiving namespace, hooked at ``prerouting`` so that it drops packets
for B and packets B forwards::

    table inet af_loss_veth0 {
        chain arrivals {
            type filter hook prerouting priority filter; policy accept;
            iifname "veth0" numgen random mod 10000 < 2500 drop
        }
    }

Not at A's egress: a packet the sender's own netfilter drops fails ``ip_output`` with
``EPERM``, so its TCP knows and keeps the segment unsent, then retries it on the next ACK
or on the zero-window-probe timer, which is at least 200 ms whatever the RTO settings
(``tcp_probe0_base``).  Real loss happens after the packet left; dropping on arrival is
what the sender sees of it (measured: ``docs/adr/0011-tcp-minimum-rto.md``).

``mod 10000`` gives a resolution of 0.01 %.  The script first adds the (possibly
existing) table, deletes it and recreates it, so one ``nft -f`` replaces the rule
atomically.
"""

from __future__ import annotations

LOSS_RESOLUTION = 10000


def loss_table_name(dev: str) -> str:
    return "af_loss_" + dev.replace("-", "_").replace(".", "_")


def loss_ruleset(dev: str, percent: float) -> str:
    """The ``nft -f -`` script that drops ``percent`` % of what arrives on ``dev``."""
    if not 0.0 < percent <= 100.0:
        raise ValueError(f"loss percent must be in (0, 100], got {percent!r}")
    threshold = round(percent * LOSS_RESOLUTION / 100)
    table = loss_table_name(dev)
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain arrivals {{\n"
        f"    type filter hook prerouting priority filter; policy accept;\n"
        f'    iifname "{dev}" numgen random mod {LOSS_RESOLUTION} < {threshold} drop\n'
        f"  }}\n"
        f"}}\n"
    )


def delete_loss_ruleset(dev: str) -> str:
    """The ``nft -f -`` script that removes the loss of ``dev`` (a no-op if there is none)."""
    table = loss_table_name(dev)
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


def tbf_argv(ns: str, dev: str, rate: str, burst: str, latency: str) -> list[str]:
    """``tc`` arguments that rate-limit the egress of ``dev`` with a token bucket."""
    return [
        "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root",
        "tbf", "rate", rate, "burst", burst, "latency", latency,
    ]  # fmt: skip


def clear_qdisc_argv(ns: str, dev: str) -> list[str]:
    """``tc`` arguments that restore the default root qdisc of ``dev``."""
    return ["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"]
