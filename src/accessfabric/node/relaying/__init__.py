"""The relay role: splicing a routed stream onto the next hop, with quotas, tenant fairness
and the relay's metrics.
"""
