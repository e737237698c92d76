"""uvicorn's HTTP protocol with the connection limits uvicorn lacks.

uvicorn bounds how long an *idle* keep-alive connection stays open (``timeout_keep_alive``), but
not how long a client may take to send a request's headers: 1,100 connections that each sent a
partial header and stopped were all still held after 70 s (slowloris). uvicorn's
``limit_concurrency`` is checked only once a request's headers are complete, so it does not help
against them either. This protocol adds, on top of uvicorn's own (h11 or httptools, whichever
uvicorn picks):

* a **header timeout**: from a connection's opening, and from the first byte of each further
  request on a kept-alive connection, the headers must be complete within ``header_timeout``
  seconds; otherwise the server answers 408 and closes the connection;
* a **connection limit**: a connection opened while ``max_connections`` are open is answered 503
  and closed at once, before it can hold anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("kerasdl.serving")


def _raw_response(status: str, message: str) -> bytes:
    from kerasdl.serving.codec import dumps

    body = dumps({"error": message})
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _LimitsMixin:
    """Header timeout and connection limit over a uvicorn HTTP/1.1 protocol class."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    # Attributes of uvicorn's protocol classes (h11_impl and httptools_impl alike).
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    client: tuple[str, int] | None

    _header_timer: asyncio.TimerHandle | None = None
    _header_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            log.warning(
                "refused a connection from %s: %d connections open (--max-connections %d)",
                self._peer(),
                len(self.connections) - 1,
                self.max_connections,
            )
            transport.write(
                _raw_response(
                    "503 Service Unavailable",
                    f"Too many connections: the server holds at most {self.max_connections} "
                    "(--max-connections). Retry later.",
                )
            )
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._between_requests():
            self._arm_header_timer()
        super().data_received(data)  # type: ignore[misc]
        if self._header_timer is not None and self.cycle is not self._header_cycle:
            self._cancel_header_timer()  # the headers are in: a request cycle started

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm_header_timer(self) -> None:
        self._header_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is not self._header_cycle or self.transport.is_closing():
            return  # a request started meanwhile (e.g. a pipelined one)
        log.info(
            "closed a connection from %s: no complete request headers within %g s "
            "(--header-timeout)",
            self._peer(),
            self.header_timeout,
        )
        self.transport.write(
            _raw_response(
                "408 Request Timeout",
                f"Request headers not received within {self.header_timeout:g} s "
                "(--header-timeout).",
            )
        )
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


def http_protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's default HTTP protocol class with a header timeout and a connection limit.

    Pass it as ``uvicorn.Config(app, http=http_protocol(10.0, 1000))``.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(
        f"Limited{AutoHTTPProtocol.__name__}",
        (_LimitsMixin, AutoHTTPProtocol),
        {"header_timeout": float(header_timeout), "max_connections": int(max_connections)},
    )
