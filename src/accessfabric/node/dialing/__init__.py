"""Reaching other nodes: endpoint addresses, carriers to dial and listen on, ranked peer
dialing, the peer sessions, network changes, NAT probing and netcheck.
"""
