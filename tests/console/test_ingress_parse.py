"""The ingress's readers without sockets: HTTP request heads and TLS ClientHellos."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from accessfabric.services.ingress_parse import (
    ALERT_UNRECOGNIZED_NAME,
    IngressRefusal,
    parse_http_head,
    read_client_hello,
    read_http_head,
)


def client_hello(server_name: str | None) -> bytes:
    """The bytes a real ``ssl`` client sends first (its ClientHello records)."""
    context = ssl.create_default_context()
    context.check_hostname = server_name is not None
    if server_name is None:
        context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_host_header_with_port_and_case() -> None:
    head = b"GET /x HTTP/1.1\r\nhOsT: Admin.Example:8080\r\nAccept: */*\r\n\r\n"
    assert parse_http_head(head) == "admin.example"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(IngressRefusal) as refusal:
        parse_http_head(head)
    assert refusal.value.status == 400


def test_head_size_limit_and_body_bytes_kept() -> None:
    async def run() -> None:
        data = b"POST / HTTP/1.1\r\nHost: web.example\r\nContent-Length: 4\r\n\r\nbody"
        read, host = await read_http_head(reader_of(data), 1024)
        assert host == "web.example"
        assert read == data  # what was read past the head goes on to the service
        big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 2000 + b"\r\n\r\n"
        with pytest.raises(IngressRefusal) as refusal:
            await read_http_head(reader_of(big), 1024)
        assert refusal.value.status == 431

    asyncio.run(run())


def test_sni_of_a_real_client_hello() -> None:
    async def run() -> None:
        hello = client_hello("admin.example")
        read, name = await read_client_hello(reader_of(hello + b"more"), 16384)
        assert name == "admin.example"
        assert read == hello
        with pytest.raises(IngressRefusal) as refusal:
            await read_client_hello(reader_of(client_hello(None)), 16384)
        assert refusal.value.alert == ALERT_UNRECOGNIZED_NAME
        with pytest.raises(IngressRefusal):
            await read_client_hello(reader_of(hello), 100)  # over the limit

    asyncio.run(run())


def test_client_hello_split_across_records() -> None:
    async def run() -> None:
        hello = client_hello("web.example")
        body = hello[5:]
        split = (
            bytes((22, 3, 1)) + (20).to_bytes(2, "big") + body[:20]
            + bytes((22, 3, 1)) + (len(body) - 20).to_bytes(2, "big") + body[20:]
        )  # fmt: skip
        _, name = await read_client_hello(reader_of(split), 16384)
        assert name == "web.example"

    asyncio.run(run())


@pytest.mark.parametrize(
    "data", [b"\x17\x03\x03\x00\x05hello", b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"]
)
def test_not_a_client_hello(data: bytes) -> None:
    async def run() -> None:
        with pytest.raises(IngressRefusal):
            await read_client_hello(reader_of(data), 16384)

    asyncio.run(run())
