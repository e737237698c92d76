"""kerasdl's HTTP protocol over uvicorn's (kerasdl/serving/connections.py): larger socket reads,
with every body byte delivered (the header timeout and the connection limit are tested against a
running server in tests/test_serving_hostile.py)."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time

import pytest
from conftest_serving import free_port

uvicorn = pytest.importorskip("uvicorn")

from kerasdl.serving.connections import READ_SIZE, http_protocol  # noqa: E402

BODY = bytes(range(256)) * 8192  # 2 MiB


def _serve(app):
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=http_protocol(10.0, 100),
        loop="asyncio",  # uvloop (if installed) has its own read size
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    return server, thread, port


def test_large_bodies_arrive_whole_through_larger_reads():
    seen: dict[str, list] = {"read_sizes": [], "chunks": []}

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        digest, more, chunks = hashlib.sha256(), True, 0
        while more:
            message = await receive()
            digest.update(message.get("body", b""))
            more, chunks = message.get("more_body", False), chunks + 1
        seen["chunks"].append(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": digest.hexdigest().encode()})

    server, thread, port = _serve(app)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body in (BODY, b"{}", BODY[: 3 * 65536 + 7]):
            conn.request("POST", "/", body=body)
            assert conn.getresponse().read() == hashlib.sha256(body).hexdigest().encode()
        transports = [p.transport for p in server.server_state.connections]
        seen["read_sizes"] = [t.max_size for t in transports]  # asyncio's selector transport
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert len(seen["chunks"]) == 3
    assert READ_SIZE >= 4 * 256 * 1024
    assert seen["read_sizes"] == [READ_SIZE]
