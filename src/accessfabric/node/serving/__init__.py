"""What this node accepts: sessions (admission, per tenant) and incoming streams
(``DataPlane``: refused, relayed, adopted or served; access; the service dispatcher).
"""
