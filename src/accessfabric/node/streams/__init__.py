"""Streams and sessions over a carrier: ``SessionConnection`` and the ``FabricStream``
implementations a node hands out (resumable, sealed).
"""
