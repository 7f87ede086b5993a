"""Every hop refuses bad leases locally, each with the right reason."""

from __future__ import annotations

import pytest

from accessfabric.control.kernel.fence import EpochFence
from accessfabric.control.kernel.objects import RouteLease, ServiceLease
from accessfabric.control.kernel.rejections import (
    LeaseRejected,
    NodeRecordRejected,
    RejectReason,
)
from accessfabric.control.kernel.signed import HEADER_LENGTH, SIGNING_CONTEXT, encode_signed
from accessfabric.control.kernel.verify import (
    verify_node_record,
    verify_route_lease,
    verify_service_lease,
)
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.objects_factory import (
    AUTHORITY,
    EXPIRES_MS,
    ISSUED_MS,
    NODES,
    NOW,
    node_record,
    route_lease,
    service_lease,
)

KEY = AUTHORITY.public_key_bytes


def _reason(blob: bytes, **kwargs: object) -> RejectReason:
    with pytest.raises(LeaseRejected) as caught:
        verify_route_lease(blob, KEY, kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(caught.value.reason.value + ": ")
    return caught.value.reason


def test_valid_lease_passes_at_every_hop() -> None:
    lease = route_lease()
    blob = encode_signed(lease, AUTHORITY)
    for node in NODES[:3]:
        assert (
            verify_route_lease(
                blob,
                KEY,
                NOW,
                hop=node.node_id.upper(),
                service="rdp",
                traffic_class=TrafficClass.INTERACTIVE,
                min_epoch=3,
            )
            == lease
        )


def test_forged_signature_is_refused() -> None:
    blob = bytearray(encode_signed(route_lease(), AUTHORITY))
    blob[-1] ^= 0x01
    assert _reason(bytes(blob)) is RejectReason.FORGED


def test_lease_signed_by_another_key_is_forged() -> None:
    impostor = NodeKey.from_seed(b"\x09" * 32)
    assert _reason(encode_signed(route_lease(), impostor)) is RejectReason.FORGED


def test_tampered_body_is_forged_even_when_well_formed() -> None:
    blob = bytearray(encode_signed(route_lease(), AUTHORITY))
    epoch_at = HEADER_LENGTH + 16 + 8 + 7  # low byte of the epoch
    blob[epoch_at] = 99
    assert _reason(bytes(blob)) is RejectReason.FORGED


def test_expired_and_not_yet_valid() -> None:
    blob = encode_signed(route_lease(), AUTHORITY)
    assert _reason(blob, now=EXPIRES_MS / 1000) is RejectReason.EXPIRED
    assert _reason(blob, now=EXPIRES_MS / 1000 + 3600) is RejectReason.EXPIRED
    assert _reason(blob, now=ISSUED_MS / 1000 - 60) is RejectReason.NOT_YET_VALID
    # Within the default 5 s clock-skew allowance a fresh lease is accepted.
    verify_route_lease(blob, KEY, ISSUED_MS / 1000 - 4)


def test_stale_epoch_is_fenced() -> None:
    blob = encode_signed(route_lease(epoch=3), AUTHORITY)
    assert _reason(blob, min_epoch=4) is RejectReason.STALE_EPOCH


def test_wrong_hop_service_and_class() -> None:
    blob = encode_signed(route_lease(), AUTHORITY)
    assert _reason(blob, hop=NODES[3].node_id) is RejectReason.HOP_NOT_ON_ROUTE
    assert _reason(blob, hop="not-a-node-id") is RejectReason.HOP_NOT_ON_ROUTE
    assert _reason(blob, service="ssh") is RejectReason.SERVICE_NOT_ALLOWED
    assert _reason(blob, traffic_class=TrafficClass.DROPPABLE) is RejectReason.CLASS_NOT_ALLOWED


def test_type_confusion_is_refused() -> None:
    record_blob = encode_signed(node_record(), AUTHORITY)
    assert _reason(record_blob) is RejectReason.WRONG_TYPE
    # Relabelling the blob as a route lease breaks the signature (the tag is signed).
    relabelled = bytearray(record_blob)
    relabelled[5] = RouteLease.object_type
    assert _reason(bytes(relabelled)) is RejectReason.FORGED
    # A signature over a node record's signed bytes, attached to them under a route
    # lease header, cannot verify either: the header, hence the message, differs.
    service_blob = encode_signed(service_lease(), AUTHORITY)
    with pytest.raises(LeaseRejected) as caught:
        verify_route_lease(service_blob, KEY, NOW)
    assert caught.value.reason is RejectReason.WRONG_TYPE


def test_signature_is_domain_separated() -> None:
    blob = encode_signed(route_lease(), AUTHORITY)
    signed_part, signature = blob[:-64], blob[-64:]
    assert AUTHORITY.sign(SIGNING_CONTEXT + signed_part) == signature
    assert AUTHORITY.sign(signed_part) != signature


@pytest.mark.parametrize(
    "blob",
    [b"", b"AFSO", b"XXXX" + bytes(100), b"AFSO\x02\x02" + bytes(100), b"AFSO\x01\x09" + bytes(80)],
)
def test_malformed_blobs(blob: bytes) -> None:
    assert _reason(blob) is RejectReason.MALFORMED


def test_service_lease_verification() -> None:
    blob = encode_signed(service_lease(epoch=5), AUTHORITY)
    lease = verify_service_lease(blob, KEY, NOW, service="admin-console", min_epoch=5)
    assert isinstance(lease, ServiceLease)
    with pytest.raises(LeaseRejected) as caught:
        verify_service_lease(blob, KEY, NOW, min_epoch=6)
    assert caught.value.reason is RejectReason.STALE_EPOCH
    with pytest.raises(LeaseRejected) as caught:
        verify_service_lease(blob, KEY, NOW, service="vpn")
    assert caught.value.reason is RejectReason.SERVICE_NOT_ALLOWED
    with pytest.raises(LeaseRejected) as caught:
        verify_service_lease(encode_signed(route_lease(), AUTHORITY), KEY, NOW)
    assert caught.value.reason is RejectReason.WRONG_TYPE


def test_node_record_verification() -> None:
    blob = encode_signed(node_record(), AUTHORITY)
    assert verify_node_record(blob, KEY, NOW) == node_record()
    with pytest.raises(NodeRecordRejected) as caught:
        verify_node_record(blob, KEY, EXPIRES_MS / 1000 + 1)
    assert caught.value.reason is RejectReason.EXPIRED
    with pytest.raises(NodeRecordRejected) as caught:
        verify_node_record(blob, NODES[0].public_key_bytes, NOW)
    assert caught.value.reason is RejectReason.FORGED


def test_epoch_fence() -> None:
    fence = EpochFence(route_id=7)
    assert fence.admit(route_lease(epoch=3))
    assert not fence.admit(route_lease(epoch=3))  # a renewal keeps its epoch
    assert fence.admit(route_lease(epoch=4))
    with pytest.raises(LeaseRejected) as caught:
        fence.admit(route_lease(epoch=3))
    assert caught.value.reason is RejectReason.STALE_EPOCH
    old = encode_signed(route_lease(epoch=3), AUTHORITY)
    assert _reason(old, min_epoch=fence.epoch) is RejectReason.STALE_EPOCH
    with pytest.raises(ValueError):
        fence.admit(route_lease(route_id=8))
