"""tokend's HTTP protocol (web/http.py) in process, on a transport that records each write:
one write per response (the head waits for the body's first part), and nothing lost or
reordered when no body part follows at once (HEAD, a slow body) or a 100 Continue comes
first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from tokend.web import http


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    """200 with a 5-byte body; ``/slow`` waits a moment between the head and the body;
    ``/echo`` reads the request's body first."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})  # fmt: skip
    if scope["path"] == "/slow":
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(autouse=True)
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_limits", (8192, 10.0))


async def exchange(raw: bytes, settle: float = 0.1) -> list[bytes]:
    config = Config(app=answer, lifespan="off")
    protocol = http.LimitedHttpToolsProtocol(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    await asyncio.sleep(settle)
    protocol.connection_lost(None)
    return transport.writes


def test_a_response_is_one_write() -> None:
    writes = asyncio.run(exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\nhello")


def test_keep_alive_responses_are_one_write_each() -> None:
    one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    writes = asyncio.run(exchange(one * 3))
    assert len(writes) == 3
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"hello") for w in writes)


def test_a_head_request_gets_its_head_without_a_body_part() -> None:
    writes = asyncio.run(exchange(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")


def test_a_head_whose_body_is_late_goes_out_first_in_order() -> None:
    writes = asyncio.run(exchange(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert b"".join(writes).endswith(b"\r\n\r\nhello")
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")
    assert writes[-1] == b"hello"


def test_100_continue_goes_out_at_once_and_before_the_response() -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"

    async def run() -> list[bytes]:
        config = Config(app=answer, lifespan="off")
        protocol = http.LimitedHttpToolsProtocol(config, ServerState(), {})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(raw)
        await asyncio.sleep(0.05)
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        protocol.data_received(b"ok")
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(run())
    assert len(writes) == 2
    assert writes[1].startswith(b"HTTP/1.1 200 OK\r\n") and writes[1].endswith(b"hello")
