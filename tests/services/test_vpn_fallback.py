"""Which stream resets make an offloading client fall back to v1 records (ADR 0034)."""

from __future__ import annotations

from accessfabric.errors import ErrorCode
from accessfabric.node.connection import StreamResetError
from accessfabric.services.vpn import refused_v2


def test_only_an_exits_internal_error_before_any_byte_on_a_v2_stream_means_fall_back() -> None:
    old_exit = StreamResetError(5, ErrorCode.INTERNAL_ERROR, remote=True)
    assert refused_v2(old_exit, wire_vnet=True, received=0)
    assert not refused_v2(old_exit, wire_vnet=False, received=0)  # already v1
    assert not refused_v2(old_exit, wire_vnet=True, received=12)  # it answered in v2
    local = StreamResetError(5, ErrorCode.INTERNAL_ERROR, remote=False)
    assert not refused_v2(local, wire_vnet=True, received=0)
    for code in (ErrorCode.CANCEL, ErrorCode.ACCESS_DENIED, ErrorCode.SERVICE_UNAVAILABLE):
        other = StreamResetError(5, code, remote=True)
        assert not refused_v2(other, wire_vnet=True, received=0), code
