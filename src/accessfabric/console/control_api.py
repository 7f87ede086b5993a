"""The console's one client of the control plane's admin API (construct it only here).

Every read and action of the console goes through :class:`ControlApi`: one base URL, one
admin bearer token, one ``aiohttp`` session with bounded timeouts and connections.  Over
``https://`` the control API's certificate must be issued by ``authority_key`` (ADR 0017):
the pin is set here and nowhere else.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from accessfabric.control.kernel.api_tls import AuthorityPin

TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)
MAX_CONNECTIONS = 8


class ControlApiError(Exception):
    """The control plane answered with an error (``status``, its ``code``) or not at all."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class ControlApi:
    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        authority_key: bytes | None = None,
    ):
        self.url = url.rstrip("/")
        self._token = admin_token
        self._ssl: ssl.SSLContext | aiohttp.Fingerprint | None = ssl_context
        if authority_key is not None:
            self._ssl = AuthorityPin(authority_key)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=self._ssl or False)
            self._session = aiohttp.ClientSession(timeout=TIMEOUT, connector=connector)
        return self._session

    async def _call(
        self, method: str, path: str, token: str | None, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token or self._token}"}
        try:
            async with self._client().request(
                method, self.url + path, json=body, headers=headers
            ) as response:
                try:
                    document = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    document = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ControlApiError(0, "unreachable", f"control plane unreachable: {exc}") from None
        if not isinstance(document, dict):
            raise ControlApiError(
                response.status, "bad_reply", "the control plane's reply is not JSON"
            )
        if response.status >= 400:
            error = document.get("error") or {}
            raise ControlApiError(
                response.status, str(error.get("code", "error")), str(error.get("message", ""))
            )
        return document

    async def get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path, None, None)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, None, body)

    async def delete(self, path: str) -> dict[str, Any]:
        return await self._call("DELETE", path, None, None)

    async def token_is_admin(self, token: str) -> bool:
        """Whether the control plane accepts ``token`` as an admin token (a login check)."""
        try:
            await self._call("GET", "/v1/admin/nodes", token, None)
        except ControlApiError as exc:
            if exc.status == 401:
                return False
            raise
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
