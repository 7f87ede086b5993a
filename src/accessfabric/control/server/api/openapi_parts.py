"""The pieces the control API's OpenAPI paths are written with: an object schema, a
``$ref``, a JSON body, responses, an operation, and the two security requirements.

Shared by :mod:`.schema` (node and operator paths) and :mod:`.console_schema`.
"""

from __future__ import annotations

from typing import Any

NODE_SECURITY: list[dict[str, list[str]]] = [{"afNode": [], "afTimestamp": [], "afSignature": []}]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminBearer": []}]


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object schema with ``properties`` (and ``required``, when any)."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON body of ``schema`` (a request's or a response's ``content``)."""
    return {"content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    """Responses with the ``Error`` document for each of ``statuses``."""
    return {str(s): {"description": "error", **json_content(ref("Error"))} for s in statuses}


def ok(schema: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """The success response: ``schema`` as JSON under ``status``."""
    return {str(status): {"description": "OK", **json_content(schema)}}


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    security: list[dict[str, list[str]]] | None = None,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation; no ``security`` means none (an open path)."""
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    op["security"] = security if security is not None else []
    if body is not None:
        op["requestBody"] = {"required": True, **json_content(body)}
    if parameters:
        op["parameters"] = parameters
    return op
