"""The HTTP/1.1 protocol `tokend serve` runs: uvicorn's httptools protocol (the fastest it
has, issue 6), with the two limits on a request's head that httptools lacks (issue 10 §7).

- Size: a request line and header fields larger than ``TOKEND_MAX_HEADER_BYTES`` in all are
  refused with ``431 Request Header Fields Too Large`` and the connection closed. httptools
  buffers a header field until it ends, so the bytes received while a head is incomplete
  are counted too: at most that limit plus one socket read is ever buffered.
- Time: a request's head must arrive within ``TOKEND_HEADER_TIMEOUT`` seconds of its first
  byte (and a new connection's first request within as long of connecting), or the
  connection is closed (``408 Request Timeout`` if part of a head came). A client that
  trickles a header line a second no longer keeps a connection as long as it likes.
  Between requests uvicorn's keep-alive timeout (5 s) applies as before.

Both cost a counter and a clock read per request, on callbacks that already run: the timer
is armed when a head begins and none is pending, and when it fires it cuts off the head in
progress if that head is late, else is armed again for what that head has left (issue 14: a
timer armed and cancelled per request cost more than the rest of the bookkeeping).
One write per response: uvicorn writes a response's head (status line and header fields) and
each part of its body with a write each, so a small answer left in two ``send()`` calls and
two TCP segments. Here a response's head waits for the first part of its body and goes out
with it (``_ResponseWrites``), or at the event loop's next turn if none follows in the same
step (a HEAD request, a body still being made). Passed to
uvicorn as its ``http`` protocol class (``tokend.cli serve``); the class is importable, so
every worker process gets it, and it reads its limits from the environment there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _HeadTooLarge(Exception):
    pass


_limits: tuple[int, float] | None = None


def _read_limits() -> tuple[int, float]:
    global _limits
    if _limits is None:
        from tokend.config import Settings

        settings = Settings()
        _limits = (settings.max_header_bytes, settings.header_timeout)
    return _limits


def _response(status: bytes, reason: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b" " + reason + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(reason)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + reason
    )


TOO_LARGE = _response(b"431", b"Request Header Fields Too Large")
TIMEOUT = _response(b"408", b"Request Timeout")


class _ResponseWrites:
    """The transport one response cycle (uvicorn's ``RequestResponseCycle``) writes to: the
    cycle's first write after it started its response, the head, is held and sent with the
    next write, the first part of the body, in one ``write``. If no write follows in the
    same step of the event loop, the head goes out at the loop's next turn
    (``call_soon``); closing sends what is held first. Every other write (``100 Continue``
    before the response, the body's further parts) passes straight through, in order."""

    __slots__ = ("_cycle", "_head_seen", "_held", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._held: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif not self._head_seen and self._cycle.response_started:
            self._head_seen = True
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a bound on the size of a request's head and on the time
    to receive it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head, self._head_timeout = _read_limits()
        self._in_head = True  # between a request's first byte (or connecting) and its body
        self._head_bytes = 0  # parsed: request target and header fields
        self._head_raw = 0  # received while the head is incomplete
        self._head_started = 0.0  # loop time when the current (or last) head began
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the timer ---------------------------------------------------------------------------

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # no head in progress: the next one arms the timer again
        left = self._head_started + self._head_timeout - self.loop.time()
        if left > 0:  # a later head than the one the timer was armed for: its own time
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        if self._head_raw or self._head_bytes:
            self.transport.write(TIMEOUT)
        self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._cancel_head_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, with the head counted and a too-large head answered 431.
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_raw += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(TOO_LARGE)
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_raw > self._max_head:
            self._refuse(TOO_LARGE)

    def _bad_request(self) -> None:
        self._cancel_head_timer()
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_raw = 0
        self._begin_head()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False  # the timer, if pending, finds no head in progress
        if self._head_bytes > self._max_head:
            raise _HeadTooLarge()
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous and cycle is not None:  # a new request's cycle (not an upgrade)
            cycle.transport = _ResponseWrites(self.transport, cycle, self.loop)  # type: ignore[assignment]
