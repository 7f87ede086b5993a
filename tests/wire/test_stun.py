"""STUN Binding messages of the NAT probe (wire/stun.py): RFC 5389 encoding, strict parsing."""

from __future__ import annotations

import pytest

from accessfabric.wire.stun import (
    BindingRequest,
    BindingSuccess,
    StunError,
    decode,
    encode_request,
    encode_success,
)

TID = bytes(range(12))


def test_rfc5769_ipv4_response_vector() -> None:
    """RFC 5769 2.2's XOR-MAPPED-ADDRESS: 192.0.2.1:32853 (the attribute bytes alone)."""
    encoded = encode_success(BindingSuccess(bytes.fromhex("b7e7a701bc34d686fa87dfae"),
                                            ("192.0.2.1", 32853)))  # fmt: skip
    assert bytes.fromhex("002000080001a147e112a643") in encoded


@pytest.mark.parametrize("mapped", [("203.0.113.7", 40000), ("2001:db8::1", 1)])
def test_round_trips(mapped: tuple[str, int]) -> None:
    assert decode(encode_success(BindingSuccess(TID, mapped))) == BindingSuccess(TID, mapped)
    for request in (
        BindingRequest(TID),
        BindingRequest(TID, change_port=True),
        BindingRequest(TID, response_port=5555),
        BindingRequest(TID, change_port=True, response_port=1),
    ):
        assert decode(encode_request(request)) == request


@pytest.mark.parametrize(
    "data",
    [
        b"",
        encode_request(BindingRequest(TID))[:-1],
        encode_request(BindingRequest(TID)) + b"\0\0\0\0",  # length disagrees
        b"\x00\x01\x00\x00" + b"\0" * 16,  # no magic cookie
        b"\x01\x11" + encode_request(BindingRequest(TID))[2:],  # an error response
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\0\x27\0\x08\0\0\0\0",  # past the end
        b"\x00\x01\x02\x24\x21\x12\xa4\x42" + TID + b"\0" * 548,  # too large
    ],
)
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(StunError):
        decode(data)
