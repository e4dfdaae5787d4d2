"""REPLICA_ID_FROM_DNS: the container's name from a PTR answer, against a DNS server on loopback
that answers the way Docker's does."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from common.settings import container_name


def answering(name: str | None):
    """A one-shot DNS server on loopback: the PTR answer `name` (None: NXDOMAIN)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)

    def serve():
        query, client = server.recvfrom(2048)
        question = query[12:]
        if name is None:
            header = query[:2] + struct.pack(">5H", 0x8183, 1, 0, 0, 0)
            server.sendto(header + question, client)
            return
        rdata = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
        answer = struct.pack(">HHHIH", 0xC00C, 12, 1, 600, len(rdata)) + rdata
        header = query[:2] + struct.pack(">5H", 0x8180, 1, 1, 0, 0)
        server.sendto(header + question + answer, client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(("answer", "expected"), [
    ("rtstack-web-1.rtstack_front", "rtstack-web-1"),
    ("rtstack_web_2.rtstack_front", "rtstack_web_2"),  # compose v1 spells names with _
    (None, None),
])
def test_the_container_name_is_the_first_label_of_the_ptr_answer(answer, expected):
    server, thread = answering(answer)
    with server:
        assert container_name("172.18.0.5", dns=server.getsockname(), timeout=2) == expected
        thread.join(5)


def test_no_dns_server_is_no_name():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()
    assert container_name("172.18.0.5", dns=address, timeout=0.5) is None
