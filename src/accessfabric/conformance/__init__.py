"""``accessfabric conformance``: check a remote Fabric Data Session implementation.

An h2spec-style runner: each check opens its own TCP+TLS connection to the peer,
drives it with hand-made frames (:mod:`.peer`) and compares what comes back with
the behaviour docs/protocol.md requires (:mod:`.checks_handshake`,
:mod:`.checks_frames`, :mod:`.checks_streams`, :mod:`.checks_credit`,
:mod:`.checks_goaway`); :mod:`.runner` runs them and reports.
"""
