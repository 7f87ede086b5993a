"""Kernel impairments of one interface direction: ``tc tbf`` rate and nftables loss.

Loss uses one nftables table per interface in the interface's namespace, hooked at
``postrouting`` so that it drops both locally sent and forwarded packets::

    table inet af_loss_veth0 {
        chain egress {
            type filter hook postrouting priority filter; policy accept;
            oifname "veth0" numgen random mod 10000 < 2500 drop
        }
    }

``mod 10000`` gives a resolution of 0.01 %.  The script first adds the (possibly
existing) table, deletes it and recreates it, so one ``nft -f`` replaces the rule
atomically.
"""

from __future__ import annotations

LOSS_RESOLUTION = 10000


def loss_table_name(dev: str) -> str:
    return "af_loss_" + dev.replace("-", "_").replace(".", "_")


def loss_ruleset(dev: str, percent: float) -> str:
    """The ``nft -f -`` script that makes ``dev`` drop ``percent`` % of its egress."""
    if not 0.0 < percent <= 100.0:
        raise ValueError(f"loss percent must be in (0, 100], got {percent!r}")
    threshold = round(percent * LOSS_RESOLUTION / 100)
    table = loss_table_name(dev)
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain egress {{\n"
        f"    type filter hook postrouting priority filter; policy accept;\n"
        f'    oifname "{dev}" numgen random mod {LOSS_RESOLUTION} < {threshold} drop\n'
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
