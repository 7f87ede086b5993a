"""The OpenAPI 3.0 document of the control API, served at ``/openapi.json``.

The node and operator paths and the schemas are in
:mod:`accessfabric.control.server.api.schema`, the console's paths in
:mod:`accessfabric.control.server.api.console_schema`; this module joins them.
"""

from __future__ import annotations

from typing import Any

from accessfabric import __version__
from accessfabric.control.server.api.console_schema import CONSOLE_PATHS
from accessfabric.control.server.api.schema import PATHS, SCHEMAS


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "accessfabric control plane",
            "version": __version__,
            "description": "Enrollment, heartbeats, peer directory, route and service leases. "
            "Node requests are signed (AF-Node, AF-Timestamp, AF-Signature: see "
            "docs/control.md); operator requests carry an admin bearer token.",
        },
        "paths": {**PATHS, **CONSOLE_PATHS},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "afNode": {"type": "apiKey", "in": "header", "name": "AF-Node"},
                "afTimestamp": {"type": "apiKey", "in": "header", "name": "AF-Timestamp"},
                "afSignature": {"type": "apiKey", "in": "header", "name": "AF-Signature"},
                "adminBearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
