"""The node side of the control plane: the API client, its caches and request signing,
heartbeat facts, the replica set, and the ``control agent`` process."""
