"""The control plane, by audience: ``kernel`` (signed objects and their checks, every
node needs them), ``client`` (the node side) and ``server`` (the plane, its API and store).

``control/`` never imports ``accessfabric.node``.
"""
