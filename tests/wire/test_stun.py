"""STUN Binding messages of the NAT probe (wire/stun.py): RFC 5389 encoding, strict parsing."""

from __future__ import annotations

import pytest

from accessfabric.wire.stun import (
    MAX_MESSAGE,
    PADDED_SIZE,
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


@pytest.mark.parametrize("size", [0, 20, 21, 24, 44, 64, 65, 548])
def test_padding_reaches_the_size_asked(size: int) -> None:
    """PADDING (0x0026) brings a request to at least ``size`` bytes (a multiple of 4, at most
    3 more); the request decodes as without it."""
    for request in (BindingRequest(TID), BindingRequest(TID, change_port=True, response_port=9)):
        encoded = encode_request(request, size=size)
        plain = len(encode_request(request))
        assert len(encoded) == max(plain, size + (-size % 4))
        assert decode(encoded) == request
        if size > plain:
            assert bytes.fromhex("0026") in encoded


def test_padding_content_is_ignored_and_size_is_bounded() -> None:
    padded = encode_request(BindingRequest(TID), size=PADDED_SIZE)
    garbage = padded[:24] + b"\xff" * (PADDED_SIZE - 24)
    assert decode(garbage) == BindingRequest(TID)
    with pytest.raises(StunError):
        encode_request(BindingRequest(TID), size=MAX_MESSAGE + 1)
