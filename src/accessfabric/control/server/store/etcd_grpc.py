"""etcd v3's protobuf messages and gRPC stubs (generated code shipped by ``aetcd``).

One import point, so the rest of the package does not depend on where the generated
modules live.  ``aetcd`` is the optional ``etcd`` extra: ``pip install accessfabric[etcd]``.
"""

from __future__ import annotations

try:
    from aetcd.rpc import kv_pb2, rpc_pb2, rpc_pb2_grpc
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the etcd store needs the aetcd package: pip install 'accessfabric[etcd]'"
    ) from error

__all__ = ["kv_pb2", "rpc_pb2", "rpc_pb2_grpc"]
