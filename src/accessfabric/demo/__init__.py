"""``accessfabric demo``: the fabric on loopback (``run``) and its parts — the control
plane (``control``, ``etcd``), the fleet of nodes (``fleet``), their traffic (``traffic``)
and the child processes (``procs``)."""
