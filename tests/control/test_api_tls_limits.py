"""The control API over TLS pinned through the authority key (ADR 0017), and its limits on
what a client can make it hold: header size, body size, slow headers."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
import pytest

from accessfabric.control.kernel import api_tls
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.server import ControlServer
from accessfabric.control.server.store import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.conditions import until

TOKEN_REQUEST = {"tenant": "acme", "roles": ["relay"], "ttl_s": 60, "uses": 1}


@asynccontextmanager
async def serving(
    tmp_path: Path, *, tls: bool = True, header_timeout: float = 10.0, **limits: float
) -> AsyncIterator[tuple[ControlServer, Authority, str]]:
    authority = Authority(NodeKey.generate())
    store = SqliteStore(tmp_path / "control.db")
    plane = ControlPlane(store, authority)
    admin = plane.admin.create()
    context = api_tls.server_context(authority) if tls else None
    server = ControlServer(
        plane, "127.0.0.1", 0, ssl_context=context, header_timeout=header_timeout, **limits
    )
    await server.start()
    try:
        yield server, authority, admin
    finally:
        await server.stop()
        store.close()


async def _test_plain_http_client_cannot_obtain_a_token(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, authority, admin):
        assert server.url.startswith("https://")
        headers = {"Authorization": f"Bearer {admin}"}
        plain = server.url.replace("https://", "http://")
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):  # no HTTP answer on a TLS port
                async with http.post(
                    plain + "/v1/admin/tokens", json=TOKEN_REQUEST, headers=headers
                ):
                    pass
            # A client pinning another authority stops before sending the admin token.
            other = api_tls.AuthorityPin(Authority(NodeKey.generate()).public_key)
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                async with http.post(
                    server.url + "/v1/admin/tokens", json=TOKEN_REQUEST, headers=headers, ssl=other
                ):
                    pass
            # Pinning the right authority works.
            pin = api_tls.AuthorityPin(authority.public_key)
            async with http.post(
                server.url + "/v1/admin/tokens", json=TOKEN_REQUEST, headers=headers, ssl=pin
            ) as response:
                assert response.status == 201
                assert (await response.json())["token"]
        # The admin CLI over https with --authority-key (a thread: the server is on this loop).
        cli = [
            sys.executable, "-m", "accessfabric", "control", "token", "create",
            "--tenant", "acme", "--roles", "relay", "--server", server.url,
            "--admin-token", admin,
        ]  # fmt: skip
        pinned = await asyncio.to_thread(
            subprocess.run, [*cli, "--authority-key", authority.public_key_text],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert pinned.returncode == 0, pinned.stderr
        assert pinned.stdout.strip()
        wrong = Authority(NodeKey.generate()).public_key_text
        refused = await asyncio.to_thread(
            subprocess.run, [*cli, "--authority-key", wrong],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode == 2
        assert "not signed by the pinned authority key" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_insecure_http_only_on_loopback(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "accessfabric", "control"]
    data = str(tmp_path / "data")
    subprocess.run([*base, "init", "--data", data], check=True, capture_output=True, timeout=30)
    result = subprocess.run(
        [*base, "serve", "--data", data, "--listen", "0.0.0.0:0", "--insecure-http"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "only allowed on a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


async def _test_over_long_header_line_is_refused_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(tmp_path, tls=False) as (server, _, _):
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000 + b"\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.read(200), 5)
            writer.close()
            assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    refusals = [r for r in caplog.records if "request refused" in r.getMessage()]
    assert len(refusals) == 1  # five refusals, one line (the rest counted)


async def _test_too_large_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    async with serving(tmp_path, tls=False) as (server, _, admin):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/admin/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {admin}\r\n".encode()
            + b"Content-Length: 67108864\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.read(200), 5)
        assert head.startswith(b"HTTP/1.1 413"), head
        # The server closes the connection instead of reading the other 64 MiB.
        sent = 0
        closed = False
        async with asyncio.timeout(10):
            while sent < 16 * 1024 * 1024:
                try:
                    writer.write(b"x" * 65536)
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                sent += 65536
                if reader.at_eof() or not await _still_open(reader):
                    closed = True
                    break
        writer.close()
        assert closed and sent < 16 * 1024 * 1024, sent


async def _still_open(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(65536), 0.01)
    except TimeoutError:
        return True
    except ConnectionError:
        return False
    return bool(data) or not reader.at_eof()


async def _test_slow_headers_are_cut_at_the_header_timeout(tmp_path: Path) -> None:
    async with serving(tmp_path, tls=False, header_timeout=1.0) as (server, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        request = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        closed_after = None
        for byte in request:  # one byte every 50 ms: never a complete head
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed_after = time.monotonic() - start
                break
            if not await _still_open(reader):
                closed_after = time.monotonic() - start
                break
            await asyncio.sleep(0.05)
        writer.close()
        assert closed_after is not None, "the server kept a slow request head open"
        assert 0.9 <= closed_after <= 5.0, closed_after


async def _test_node_control_client_talks_tls_with_the_authority_pin(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, authority, admin):
        from accessfabric.control.client.client import ControlClient, ControlUnavailable

        key = NodeKey.generate()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.url + "/v1/admin/tokens",
                json=TOKEN_REQUEST,
                headers={"Authorization": f"Bearer {admin}"},
                ssl=api_tls.AuthorityPin(authority.public_key),
            ) as response,
        ):
            token = (await response.json())["token"]
        async with ControlClient(server.url, key, authority.public_key, str(tmp_path / "c")) as c:
            record = await c.enroll(token)
            assert record.node_id == key.node_id
        wrong = Authority(NodeKey.generate()).public_key
        async with ControlClient(server.url, key, wrong, str(tmp_path / "w")) as c:
            with pytest.raises(ControlUnavailable) as caught:
                await c.enroll(token)
            assert "ServerFingerprintMismatch" in str(caught.value)


def test_plain_http_client_cannot_obtain_a_token(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_test_plain_http_client_cannot_obtain_a_token(tmp_path), 60))


def test_over_long_header_line_is_refused_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(
        asyncio.wait_for(
            _test_over_long_header_line_is_refused_without_a_traceback(tmp_path, caplog), 60
        )
    )


def test_too_large_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_test_too_large_body_is_refused_before_it_is_read(tmp_path), 60))


def test_slow_headers_are_cut_at_the_header_timeout(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_test_slow_headers_are_cut_at_the_header_timeout(tmp_path), 60))


def test_node_control_client_talks_tls_with_the_authority_pin(tmp_path: Path) -> None:
    asyncio.run(
        asyncio.wait_for(_test_node_control_client_talks_tls_with_the_authority_pin(tmp_path), 60)
    )


async def _test_connections_that_never_finish_tls_are_capped_and_cut(tmp_path: Path) -> None:
    from accessfabric.control.server.server import MAX_PENDING_HANDSHAKES_PER_ADDRESS

    async def held(port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        with suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 20)
        writer.close()
        return time.monotonic() - start

    async with serving(tmp_path, header_timeout=1.5) as (server, _, _):
        count = MAX_PENDING_HANDSHAKES_PER_ADDRESS + 20
        times = await asyncio.gather(*(held(server.port) for _ in range(count)))
        assert server.handshakes.refused == 20
        assert server.handshakes.total == 0
    refused = [t for t in times if t < 0.75]
    cut = [t for t in times if t >= 0.75]
    assert len(refused) == 20  # beyond the per-address cap: closed at accept
    assert len(cut) == MAX_PENDING_HANDSHAKES_PER_ADDRESS
    assert max(cut) < 1.5 + 5.0  # cut at the header timeout, not asyncio's 60 s


def test_connections_that_never_finish_tls_are_capped_and_cut(tmp_path: Path) -> None:
    asyncio.run(
        asyncio.wait_for(_test_connections_that_never_finish_tls_are_capped_and_cut(tmp_path), 60)
    )


async def _tls_held(port: int, source: str) -> float:
    """Connect from ``source``, finish TLS, send nothing: seconds until the server closed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, local_addr=(source, 0)
    )
    start = time.monotonic()
    with suppress(ConnectionError, ssl.SSLError):
        await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return time.monotonic() - start


async def _test_finished_tls_connections_are_capped_and_cut_when_idle(tmp_path: Path) -> None:
    timeout = 1.5
    async with serving(
        tmp_path, header_timeout=timeout, max_connections=12, max_connections_per_address=8
    ) as (server, authority, _):
        cap = server.connections
        first = [asyncio.create_task(_tls_held(server.port, "127.0.0.2")) for _ in range(10)]
        await until(lambda: cap.by_address["127.0.0.2"] == 8 and cap.refused == 2)
        # a healthy client elsewhere is still answered
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/healthz", ssl=api_tls.AuthorityPin(authority.public_key))
            as response,
        ):  # fmt: skip
            assert response.status == 200
        await until(lambda: cap.open == 8)  # the healthy connection closed
        second = [asyncio.create_task(_tls_held(server.port, "127.0.0.3")) for _ in range(6)]
        await until(lambda: cap.open == 12 and cap.refused == 4)  # the total cap
        times = await asyncio.gather(*first, *second)
        assert cap.open == 0
    refused = [t for t in times if t < timeout / 2]
    cut = [t for t in times if t >= timeout / 2]
    assert len(refused) == 4  # closed right after the handshake
    assert len(cut) == 12 and max(cut) <= timeout + 5.0  # idle: cut at the header timeout


def test_finished_tls_connections_are_capped_and_cut_when_idle(tmp_path: Path) -> None:
    asyncio.run(
        asyncio.wait_for(_test_finished_tls_connections_are_capped_and_cut_when_idle(tmp_path), 60)
    )


async def _test_a_slow_body_is_cut(tmp_path: Path) -> None:
    async with serving(tmp_path, tls=False) as (server, _, admin):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        start = time.monotonic()
        writer.write(
            b"POST /v1/admin/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + admin.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"tenant\""
        )  # fmt: skip
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    assert status.startswith(b"HTTP/1.1 408"), status
    assert time.monotonic() - start < 5.0


def test_a_slow_body_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accessfabric.control.server.api import body

    monkeypatch.setattr(body, "BODY_TIMEOUT", 1.0)
    asyncio.run(asyncio.wait_for(_test_a_slow_body_is_cut(tmp_path), 60))


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), 10)
    return head.split(b"\r\n", 1)[0]


async def _test_an_idle_kept_alive_connection_outlives_the_header_timeout(
    tmp_path: Path,
) -> None:
    header, idle = 1.0, 4.0
    async with serving(tmp_path, tls=False, header_timeout=header, idle_timeout=idle) as (
        server,
        _,
        _,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await _request(reader, writer) == b"HTTP/1.1 200 OK"
            # idle for more than the header timeout (a heartbeat interval, in production):
            # the connection is still there for the next request
            await asyncio.sleep(header * 2.5)
            assert await _request(reader, writer) == b"HTTP/1.1 200 OK"
            # a head begun on the kept-alive connection is still on the header clock
            start = time.monotonic()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            assert 0.9 * header <= time.monotonic() - start <= header + 3.0
        finally:
            writer.close()
        # and an idle connection is closed at the idle timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await _request(reader, writer) == b"HTTP/1.1 200 OK"
            start = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 20) == b""
            assert 0.9 * idle <= time.monotonic() - start <= idle + 4.0
        finally:
            writer.close()


def test_an_idle_kept_alive_connection_outlives_the_header_timeout(tmp_path: Path) -> None:
    asyncio.run(
        asyncio.wait_for(
            _test_an_idle_kept_alive_connection_outlives_the_header_timeout(tmp_path), 60
        )
    )


async def _test_a_head_begun_just_before_the_idle_close_is_answered(tmp_path: Path) -> None:
    """ADR 0042: a head whose first bytes arrive before the idle close and the rest after
    it is on the head clock alone (the idle close used to cut it: a request lost at the
    boundary).  Half a head 1 s into a 2 s idle period, the rest 0.4 s after the idle
    close (0.6 s before the head deadline)."""
    header = idle = 2.0
    async with serving(tmp_path, tls=False, header_timeout=header, idle_timeout=idle) as (
        server,
        _,
        _,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await _request(reader, writer) == b"HTTP/1.1 200 OK"
            answered = time.monotonic()  # the server's idle clock started before this
            await asyncio.sleep(1.0)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            await writer.drain()
            await asyncio.sleep(answered + idle + 0.4 - time.monotonic())
            writer.write(b"Host: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK"), head
        finally:
            writer.close()


def test_a_head_begun_just_before_the_idle_close_is_answered(tmp_path: Path) -> None:
    asyncio.run(
        asyncio.wait_for(_test_a_head_begun_just_before_the_idle_close_is_answered(tmp_path), 60)
    )
