"""``accessfabric status``: ask a running node's admin socket, print tables (or JSON)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from accessfabric.exit_codes import Exit

TABLES = (  # the sections `status` prints, in order
    "control",
    "host",
    "sessions",
    "streams",
    "routes",
    "leases",
    "endpoints",
    "services",
    "forwards",
    "ingress",
    "access",
    "relay",
    "tenants",
    "observer",
    "vpn",
    "admission",
)


class AdminUnreachable(Exception):
    """The node's admin socket did not answer; the message says why in the user's terms
    (``guarded`` commands print it and exit 3, ``Exit.UNREACHABLE``)."""


def ask_admin(
    socket_path: Path,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One request to the admin socket, run to its end: (HTTP status, the JSON answer, or
    its text when it is not JSON); :class:`AdminUnreachable` when the socket does not
    answer."""

    async def request() -> tuple[int, Any]:
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as client,
            client.request(method, f"http://node{path}", params=query) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text.strip()

    try:
        return asyncio.run(request())
    except (OSError, aiohttp.ClientError, TimeoutError) as error:
        raise AdminUnreachable(unreachable_reason(socket_path, error, timeout)) from None


async def fetch_status(socket_path: Path, timeout: float = 5.0) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=client_timeout) as client,
        client.get("http://node/status") as response,
    ):
        response.raise_for_status()
        data: dict[str, Any] = await response.json()
        return data


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):  # e.g. the VPN's bytes_by_class
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    text = str(value)
    if text.startswith("afn1") and len(text) > 20:
        return text[:14] + "…"
    return text


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Rows of dicts as aligned text columns (the keys of the first row are the header)."""
    if not rows:
        return ["  (none)"]
    header = list(rows[0])
    cells = [[_cell(row.get(key)) for key in header] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  " + "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    for row in cells:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return lines


def render(status: dict[str, Any]) -> str:
    name = f" ({status['node_name']})" if status.get("node_name") else ""
    lines = [
        f"node {status.get('node_id', '?')}{name}  up {status.get('uptime_s', 0)} s  "
        f"metrics {status.get('metrics_url') or '(not served)'}"
    ]
    for name in TABLES:
        rows = status.get(name)
        if rows is None:
            continue
        lines.append("")
        lines.append(f"{name}:")
        if isinstance(rows, dict):
            lines.extend(_fields(rows))
            continue
        lines.extend(table(rows) if isinstance(rows, list) else [f"  {rows}"])
    return "\n".join(lines)


def _fields(section: dict[str, Any]) -> list[str]:
    """A section given as a dict: its plain values as ``key  value`` lines, then each
    list of rows as a sub-table under its key (the ``relay`` section)."""
    plain = {k: v for k, v in section.items() if not _is_rows(v)}
    width = max((len(k) for k in plain), default=0)
    lines = [f"  {k.ljust(width)}  {_cell(v)}" for k, v in plain.items()]
    for key, rows in section.items():
        if _is_rows(rows):
            lines.append(f"  {key}:")
            lines.extend("  " + line for line in table(rows))
    return lines


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(row, dict) for row in value)


def unreachable_reason(socket_path: Path, error: BaseException, timeout: float = 5.0) -> str:
    """Why the admin socket did not answer, in the user's terms (no aiohttp internals)."""
    cause = getattr(error, "os_error", None) or error
    if not socket_path.exists():
        return (
            f"no node is running with admin socket {socket_path} (the socket does not exist; "
            "start it with `accessfabric node run --config ...`)"
        )
    if isinstance(cause, PermissionError):
        return (
            f"permission denied on admin socket {socket_path} (mode 0600: run status as the "
            "user that runs the node)"
        )
    if isinstance(cause, ConnectionRefusedError):
        return f"nothing answers on admin socket {socket_path} (the node stopped?)"
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return f"the node did not answer on {socket_path} within {timeout:g} s"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"the node answered {error.status} on {socket_path}"
    return f"cannot reach the node at {socket_path}: {type(cause).__name__}"


def run_status(socket_path: Path, as_json: bool) -> tuple[int, str]:
    try:
        status = asyncio.run(fetch_status(socket_path))
    except (OSError, aiohttp.ClientError, TimeoutError) as error:
        return int(Exit.UNREACHABLE), unreachable_reason(socket_path, error)
    return 0, json.dumps(status, indent=2) if as_json else render(status)
