"""Bounds on a request's head (issue 10 §7), over real loopback sockets against a real
`tokend serve` (tokend.web.http): an oversized head is 431, a head trickled slowly is cut
off, and neither keeps the worker from serving others meanwhile. Before, a 64 MiB header
was read and answered 200 after 5 s, and a trickled one kept its connection for as long as
the client liked."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import running_server

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    db = tmp_path_factory.mktemp("head") / "tokend.db"
    env = {
        "TOKEND_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "TOKEND_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }
    with running_server(f"sqlite:///{db}", env=env) as base:
        parts = urlsplit(base)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port


def connect(server: tuple[str, int]) -> socket.socket:
    return socket.create_connection(server, timeout=10)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or 10 s pass)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def read_response(sock: socket.socket) -> bytes:
    """One response on a kept-alive connection (a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    top, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in top.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return data


def head(extra: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def healthy(server: tuple[str, int]) -> bool:
    return httpx.get(f"http://{server[0]}:{server[1]}/healthz", timeout=2).status_code == 200


def test_a_normal_head_is_served(server: tuple[str, int]) -> None:
    with connect(server) as s:
        s.sendall(
            head(b"X-Pad: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\nConnection: close\r\n\r\n")
        )
        assert status_of(read_all(s)) == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["one-write", "many-writes"])
def test_an_oversized_header_is_431_without_reading_it_all(
    server: tuple[str, int], chunked: bool
) -> None:
    big = b"X-Big: " + b"a" * (4 * 1024 * 1024)
    with connect(server) as s:
        s.sendall(head())
        sent = 0
        try:
            for i in range(0, len(big), 8192 if chunked else len(big)):
                s.sendall(big[i : i + (8192 if chunked else len(big))])
                sent += 8192
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection mid-header: what we want
        response = read_all(s)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert healthy(server)


def test_many_small_headers_over_the_limit_are_431(server: tuple[str, int]) -> None:
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(MAX_HEADER_BYTES // 50))
    with connect(server) as s:
        s.sendall(head(lines + b"\r\n"))
        assert read_all(s).startswith(b"HTTP/1.1 431 ")


def test_a_long_request_target_is_431(server: tuple[str, int]) -> None:
    with connect(server) as s:
        s.sendall(b"GET /healthz?" + b"a" * (MAX_HEADER_BYTES + 10) + b" HTTP/1.1\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 431 ")


def test_a_trickled_head_is_cut_off_and_others_are_served_meanwhile(
    server: tuple[str, int],
) -> None:
    with connect(server) as s:
        s.sendall(head())
        start = time.monotonic()
        closed = False
        for i in range(int(HEADER_TIMEOUT * 4)):
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            assert healthy(server)  # the worker serves others meanwhile
            time.sleep(0.5)
        response = b"" if closed else read_all(s)
        elapsed = time.monotonic() - start
    assert closed or response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert elapsed < HEADER_TIMEOUT + 2.5, elapsed


def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(server) as s:
        start = time.monotonic()
        assert read_all(s) == b""
        assert time.monotonic() - start < HEADER_TIMEOUT + 2


def test_keep_alive_requests_each_get_their_own_time(server: tuple[str, int]) -> None:
    """The timer starts at a request's first byte: a connection that serves a request now
    and then is not cut off for having lived longer than the head timeout."""
    with connect(server) as s:
        for _ in range(3):
            s.sendall(head(b"\r\n"))
            assert status_of(read_response(s)) == 200
            time.sleep(HEADER_TIMEOUT * 0.6)


def test_a_head_begun_after_the_timer_was_armed_gets_its_whole_time(
    server: tuple[str, int],
) -> None:
    """The timer is armed when a head begins and none is pending (tokend.web.http): when
    the one armed for the connection's first head fires during a later head, that head still
    has its own HEADER_TIMEOUT from its first byte, and is cut off only past it."""
    with connect(server) as s:
        s.sendall(head(b"\r\n"))  # the connection's first head: the timer fires at ~2.0 s
        assert status_of(read_response(s)) == 200
        time.sleep(HEADER_TIMEOUT * 0.6)  # ~1.2 s
        s.sendall(head())  # a second head begins at ~1.2 s, due by ~3.2 s
        time.sleep(HEADER_TIMEOUT * 0.8)  # ~2.8 s: past the first timer, within its own time
        s.sendall(b"\r\n")
        assert status_of(read_response(s)) == 200
        s.sendall(head())  # a third head, never finished: cut off after its own time
        start = time.monotonic()
        response = read_all(s)
        elapsed = time.monotonic() - start
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + 2, elapsed
