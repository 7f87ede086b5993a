"""The machine and the OS process under a node: host facts and pressure, NetworkManager, GC
and allocator tuning, systemd readiness, the key lock.
"""
