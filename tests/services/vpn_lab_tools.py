"""Small programs the VPN tests run inside namespaces (stdlib only).

sink HOST PORT               accept one TCP connection, print the sha256 of what arrives
send HOST PORT FILE          connect and send FILE
serve-file HOST PORT FILE    accept one connection, send FILE
fetch HOST PORT              connect, print the sha256 of what arrives
dns-server HOST              answer A queries on UDP HOST:53 with 192.0.2.53 (until killed)
dns-query HOST NAME          ask HOST:53 for NAME, print the answer's address
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys


def _drain(conn: socket.socket) -> str:
    digest = hashlib.sha256()
    while data := conn.recv(1 << 20):
        digest.update(data)
    return digest.hexdigest()


def _send(conn: socket.socket, path: str) -> None:
    with open(path, "rb") as handle:
        conn.sendfile(handle)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)


def _listen(host: str, port: int) -> socket.socket:
    server = socket.create_server((host, port))
    conn, _ = server.accept()
    server.close()
    return conn


def _dns_answer(query: bytes) -> bytes:
    ident = query[:2]
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes((192, 0, 2, 53))
    return header + question + answer


def _dns_query(name: str) -> bytes:
    labels = b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def main(argv: list[str]) -> None:
    command, host = argv[0], argv[1]
    if command == "sink":
        conn = _listen(host, int(argv[2]))
        print(_drain(conn), flush=True)
    elif command == "send":
        conn = socket.create_connection((host, int(argv[2])), timeout=60)
        _send(conn, argv[3])
    elif command == "serve-file":
        conn = _listen(host, int(argv[2]))
        _send(conn, argv[3])
    elif command == "fetch":
        conn = socket.create_connection((host, int(argv[2])), timeout=60)
        print(_drain(conn), flush=True)
    elif command == "dns-server":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 53))
        while True:
            query, peer = udp.recvfrom(512)
            udp.sendto(_dns_answer(query), peer)
    elif command == "dns-query":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(2)
        for _ in range(5):
            udp.sendto(_dns_query(argv[2]), (host, 53))
            try:
                reply = udp.recv(512)
            except TimeoutError:
                continue
            print(socket.inet_ntoa(reply[-4:]), flush=True)
            return
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
