"""Services above the fabric: TCP forwarding, the service host, the VPN.

Services ask the node for a stream to a logical service with a traffic class
(:class:`~accessfabric.services.fabric.StreamOpener`) and never pick routes;
this package imports neither ``control/`` nor route selection.
"""
