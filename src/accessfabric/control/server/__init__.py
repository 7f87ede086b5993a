"""The control plane server: the plane and its HTTP API, stores, registry, leasing, the
route planner, grants, tokens, replication, fleet events and the ``control`` CLI."""
