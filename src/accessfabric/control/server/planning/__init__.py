"""The route planner's parts: graph model, policy, scoring, search (pure: no I/O, no clock).

:mod:`accessfabric.control.server.planner` puts them together; import from there.
"""
