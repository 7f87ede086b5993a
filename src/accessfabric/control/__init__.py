"""The control plane: store, authority, signed records and leases, enrollment, planning.

``control/`` never imports ``accessfabric.node``.
"""
