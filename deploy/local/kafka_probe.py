#!/usr/bin/env python3
"""Ask a Kafka broker for cluster metadata; exit 0 when it lists a live broker.

Standard library only (runs before any virtualenv exists). Speaks one
MetadataRequest v1 with an empty topic list, which every broker since 0.10
answers, and prints e.g. "brokers=1 controller=1 nodes=1@127.0.0.1:9092".

    kafka_probe.py [HOST] [PORT] [TIMEOUT_SECONDS]
"""

from __future__ import annotations

import socket
import struct
import sys

API_METADATA = 3


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def probe(host: str, port: int, timeout: float) -> tuple[list[tuple[int, str, int]], int]:
    client_id = b"fnbus-probe"
    correlation_id = 7
    # request header v1: api_key, api_version, correlation_id, client_id
    header = struct.pack(">hhih", API_METADATA, 1, correlation_id, len(client_id)) + client_id
    body = struct.pack(">i", 0)  # topics: empty array -> no topic metadata
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        data = _recv_exact(sock, size)

    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def take_str() -> str | None:
        nonlocal pos
        length = take(">h")
        if length < 0:
            return None
        value = data[pos : pos + length].decode("utf-8")
        pos += length
        return value

    if take(">i") != correlation_id:
        raise ValueError("unexpected correlation id")
    brokers = []
    for _ in range(take(">i")):
        node_id = take(">i")
        bhost = take_str() or ""
        bport = take(">i")
        take_str()  # rack
        brokers.append((node_id, bhost, bport))
    controller = take(">i")
    return brokers, controller


def main(argv: list[str]) -> int:
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    port = int(argv[2]) if len(argv) > 2 else 9092
    timeout = float(argv[3]) if len(argv) > 3 else 3.0
    try:
        brokers, controller = probe(host, port, timeout)
    except (OSError, ValueError, struct.error) as exc:
        print(f"no answer from {host}:{port}: {exc}", file=sys.stderr)
        return 1
    nodes = ",".join(f"{n}@{h}:{p}" for n, h, p in brokers)
    print(f"brokers={len(brokers)} controller={controller} nodes={nodes}")
    return 0 if brokers else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
