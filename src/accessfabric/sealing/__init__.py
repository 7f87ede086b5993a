"""End-to-end sealing of stream payloads, so relays forward bytes they cannot read.

See docs/sealing.md for the design and threat model.
"""

from accessfabric.sealing.handshake import SealInitiator, SealResponder
from accessfabric.sealing.records import RecordOpener, RecordSealer, SealingError

__all__ = ["RecordOpener", "RecordSealer", "SealInitiator", "SealResponder", "SealingError"]
