"""Routes at the source and the lease check every hop runs: route execution and failover,
route switches, route tests, service failovers.
"""
