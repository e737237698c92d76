"""Hostile input and TF Serving parity for the model server (issue 14, defects 4 to 9).

Most tests talk to a real ``serve()`` process (uvicorn, the kerasdl protocol, the app) over raw
sockets or ``http.client``, and read its log and its resident memory; the header parser is also
checked against ``tf.io.decode_image`` on real files of every format TensorFlow decodes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest_serving import (
    UvicornThread,
    call,
    digits_data,
    free_port,
    model_base,
    png_bytes,
    serve_command,
    serve_env,
    wait_ready,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from kerasdl.serving.images import UnreadableImage, image_size  # noqa: E402
from kerasdl.serving.limits import MIN_IMAGE_PIXELS, Limits, image_pixel_limit  # noqa: E402

PREDICT = "/v1/models/digits:predict"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 100

_SERVER = """
import sys
from kerasdl.serving.app import ServerConfig
from kerasdl.serving.limits import Limits
from kerasdl.serving.server import serve

base, port, header, body, conns = sys.argv[1:6]
limits = Limits(header_timeout=float(header), body_timeout=float(body), max_connections=int(conns))
serve(base, port=int(port), poll_interval=0, keep_alive_timeout=2.0,
      config=ServerConfig(max_body_bytes=4 * 1024 * 1024, limits=limits))
"""


class ServerProcess:
    """``kerasdl.serving.server.serve`` in its own process, its log in a file."""

    def __init__(self, header: float, body: float, conns: int) -> None:
        self.base = model_base("hostile")
        self.port = free_port()
        self.log_path = self.base / "server.log"
        args = [str(self.base), str(self.port), str(header), str(body), str(conns)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, *args],
            env=serve_env(),
            stdout=self._log,
            stderr=self._log,
        )
        wait_ready(self.port, self.proc, timeout=120, output=lambda: self.log()[-3000:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """The server's resident memory in bytes (Linux)."""
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS)
    try:
        yield srv
    finally:
        srv.stop()


def _open(port: int, first_bytes: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first_bytes:
        s.sendall(first_bytes)
    return s


def _read_all(s: socket.socket, timeout: float) -> bytes | None:
    """What the server sends until it closes; None if it has not closed within ``timeout``."""
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return out


def _read_response(s: socket.socket, timeout: float = 30) -> bytes:
    """One whole HTTP response (headers and a Content-Length body) from a kept-alive socket."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {data[:80]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return head + b"\r\n\r\n" + rest


def _ok(port: int) -> bool:
    x, _ = digits_data()
    return call(port, "POST", PREDICT, {"instances": x[:1].tolist()}, timeout=30)[0] == 200


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# --- encoded images: the header's size is checked before decoding ---------------------------


def png_bomb(side: int) -> bytes:
    """A real, valid ``side x side`` all-black grayscale PNG (compresses ~1000:1)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG start (SOI, an APP0 segment, SOF0) declaring ``width x height``."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda" + b"\x00" * 64


def jxl_header(side: int) -> bytes:
    """A JPEG XL codestream start declaring ``side x side`` (18-bit height, ratio 1:1)."""
    bits = 0 | (2 << 1) | ((side - 1) << 3) | (1 << 21)  # small=0, selector 2, height-1, ratio 1
    return b"\xff\x0a" + bits.to_bytes(4, "little") + b"\x00" * 16


def test_image_bomb_gets_400_from_its_header_quickly_with_bounded_memory(server):
    p = server.port
    bomb = png_bomb(8000)  # 64 megapixels in ~63 KB, 4x the default limit for an 8x8 model
    assert len(bomb) < 100_000
    before = server.rss()
    for data, words in [
        (bomb, "8000x8000 PNG image (64,000,000 pixels)"),
        (jpeg_header(60000, 60000), "60000x60000 JPEG image"),
        (jxl_header(50000), "50000x50000 JPEG XL image"),
    ]:
        t0 = time.monotonic()
        status, body = call(
            p, "POST", PREDICT, {"signature_name": "serving_bytes", "instances": [_b64(data)]}
        )
        elapsed = time.monotonic() - t0
        assert status == 400, body
        assert words in body["error"] and "--max-image-pixels" in body["error"], body
        assert f"limit of {MIN_IMAGE_PIXELS:,} pixels" in body["error"]
        assert elapsed < 2.0, elapsed
    grown = server.rss() - before
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.0f} MiB"
    # A normal image in the same batch position still works, and so does the server.
    ok = {
        "signature_name": "serving_bytes",
        "instances": [_b64(png_bytes(np.zeros((64, 64), "uint8")))],
    }
    assert call(p, "POST", PREDICT, ok)[0] == 200


def test_image_limit_is_configurable_and_follows_the_model_input():
    assert image_pixel_limit(Limits(), (8, 8)) == MIN_IMAGE_PIXELS
    assert image_pixel_limit(Limits(), None) == MIN_IMAGE_PIXELS
    assert image_pixel_limit(Limits(), (384, 384)) == 256 * 384 * 384
    assert image_pixel_limit(Limits(max_image_pixels=1000), (384, 384)) == 1000
    with pytest.raises(ValueError, match="max_image_pixels"):
        Limits(max_image_pixels=0)
    # The command-line options (kerasdl serve adds them with add_limit_arguments).
    import argparse

    from kerasdl.errors import UserError
    from kerasdl.serving.limits import add_limit_arguments, limits_from_args

    parser = argparse.ArgumentParser()
    add_limit_arguments(parser)
    assert limits_from_args(parser.parse_args([])) == Limits()
    args = parser.parse_args(["--max-image-pixels", "5000", "--header-timeout", "2.5"])
    assert limits_from_args(args) == Limits(max_image_pixels=5000, header_timeout=2.5)
    with pytest.raises(UserError, match=r"^--max-connections must be >= 1. Received: 0$"):
        limits_from_args(parser.parse_args(["--max-connections", "0"]))


def test_image_limit_option_reaches_the_server():
    from kerasdl.serving.app import ServerConfig, create_app
    from kerasdl.serving.repository import ModelRepository

    base = model_base("pixels")
    config = ServerConfig(limits=Limits(max_image_pixels=20 * 20))
    app = create_app(ModelRepository(base, poll_interval=0), config)
    with UvicornThread(app) as srv:
        port = srv.port
        small, big = png_bytes(np.zeros((20, 20), "uint8")), png_bytes(np.zeros((21, 20), "uint8"))
        req = {"signature_name": "serving_bytes", "instances": [_b64(small), _b64(big)]}
        status, body = call(port, "POST", PREDICT, req)
        assert status == 400 and "example 1: a 20x21 PNG image (420 pixels)" in body["error"]
        req["instances"] = [_b64(small)]
        assert call(port, "POST", PREDICT, req)[0] == 200


def _pil(image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


# The smallest JPEG XL files cjxl (libjxl 0.7) wrote for 17x5 and 8x8 RGB images.
JXL_17X5 = bytes.fromhex("ff0a2000208084e24200128802")
JXL_8X8 = bytes.fromhex("ff0a414042712100128802")


def test_image_headers_are_read_as_tensorflow_decodes_them():
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype="uint8"))
    frames = [Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype="uint8")) for _ in range(3)]
    files = {
        "png": _pil(rgb, "PNG"),
        "png16": _pil(Image.fromarray(np.zeros((9, 7), "uint16")), "PNG"),
        "jpeg": _pil(rgb, "JPEG"),
        "jpeg-progressive": _pil(rgb, "JPEG", progressive=True, quality=90),
        "jpeg-exif": _pil(rgb, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 60000),
        "gif": _pil(rgb, "GIF"),
        "gif-animated": _pil(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "bmp": _pil(rgb, "BMP"),
        "webp-lossy": _pil(rgb, "WEBP", quality=80),
        "webp-lossless": _pil(rgb, "WEBP", lossless=True),
        "webp-animated": _pil(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
    }
    animated_webp = files.pop("webp-animated")
    for name, data in files.items():
        size = image_size(data)
        decoded = tf.io.decode_image(data, expand_animations=False).shape
        assert (size.height, size.width) == tuple(decoded[:2]), name
        assert not size.refused
    # TF 2.21 aborts the process decoding this one with channels=0 (heap corruption): refused.
    size = image_size(animated_webp)
    assert (size.format, size.width, size.height) == ("animated WebP", 40, 30) and size.refused
    assert image_size(files["gif-animated"]).frames == 3
    assert image_size(files["gif-animated"]).pixels == 3 * 30 * 40
    for data, hw in [(JXL_17X5, (5, 17)), (JXL_8X8, (8, 8))]:
        size = image_size(data)
        assert (size.format, size.height, size.width) == ("JPEG XL", *hw)
    # Declared sizes of crafted headers, and what is not an image at all.
    assert image_size(jpeg_header(60000, 50000)).pixels == 3_000_000_000
    assert image_size(jxl_header(50000)).pixels == 2_500_000_000
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x0a\x00\x00\x00" + b"\x02\x00\x00\x00"
    vp8x += (16383).to_bytes(3, "little") * 2
    assert image_size(vp8x).pixels == 16384 * 16384
    assert image_size(b"hello") is None and image_size(b"") is None
    for broken in [b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xe0\x00", b"GIF89a\x01"]:
        with pytest.raises(UnreadableImage):
            image_size(broken)


# --- deep nesting ----------------------------------------------------------------------------


def _nested(depth: int, leaf: bytes, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + leaf + close * depth


DEEP = [
    (
        "strings 990 deep",
        b'{"signature_name": "serving_bytes", "instances": ' + _nested(990, b'"a"') + b"}",
    ),
    (
        "b64 990 deep",
        b'{"signature_name": "serving_bytes", "inputs": ' + _nested(990, b'{"b64": "AA=="}') + b"}",
    ),
    ("numbers 990 deep", b'{"instances": ' + _nested(990, b"1.0") + b"}"),
    ("objects 990 deep", b'{"instances": [' + _nested(990, b"1", b'{"images": ', b"}") + b"]}"),
    ("lists 100k deep", b'{"instances": ' + _nested(100_000, b"1") + b"}"),
    ("objects 100k deep", b'{"inputs": ' + _nested(100_000, b"1", b'{"a": ', b"}") + b"}"),
    ("NaN and 100k deep", b'{"instances": [NaN, ' + _nested(100_000, b"1") + b"]}"),
]


@pytest.mark.parametrize("what,raw", DEEP, ids=[d[0] for d in DEEP])
def test_deep_nesting_gets_400_quickly(server, what, raw):
    t0 = time.monotonic()
    status, body = call(server.port, "POST", PREDICT, raw=raw)
    assert status == 400, body
    assert set(body) == {"error"} and "Internal error" not in body["error"]
    assert time.monotonic() - t0 < 2.0


# --- connections: header time, body time, connection count, hang-ups -----------------------


PARTIAL = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: applic"


def test_slow_headers_get_408_and_are_closed(server):
    p = server.port
    held = [_open(p, PARTIAL) for _ in range(60)]
    idle = [_open(p) for _ in range(20)]  # connected, never sent a byte
    try:
        assert _ok(p), "a normal request is served meanwhile"
        t0 = time.monotonic()
        for s in held + idle:
            left = max(0.1, t0 + HEADER_TIMEOUT + 5 - time.monotonic())
            answer = _read_all(s, left)
            assert answer is not None, "the server still holds a connection with partial headers"
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 5
        assert _ok(p)
    finally:
        for s in held + idle:
            s.close()


def test_headers_sent_slowly_within_the_timeout_are_served(server):
    x, _ = digits_data()
    body = json.dumps({"instances": x[:1].tolist()}).encode()
    request = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _open(server.port) as s:
        # A first request, then the second one starts just before the keep-alive timer (2 s)
        # would fire and takes longer than that to send: neither timer may cut it off.
        s.sendall(request + body)
        first = _read_response(s)
        assert first.startswith(b"HTTP/1.1 200 "), first[:80]
        time.sleep(1.7)
        for i in range(0, len(request), 20):
            s.sendall(request[i : i + 20])
            time.sleep(0.6 * HEADER_TIMEOUT / (len(request) / 20))
        time.sleep(0.5)
        s.sendall(body)
        second = _read_response(s)
        assert second.startswith(b"HTTP/1.1 200 "), second[:80]


def test_slow_body_gets_408(server):
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
    with _open(server.port, head + b'{"instances": [') as s:
        answer = _read_all(s, BODY_TIMEOUT + 5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"--body-timeout" in answer


def test_connections_over_the_limit_get_503(server):
    p = server.port
    held = [_open(p, PARTIAL) for _ in range(MAX_CONNECTIONS)]
    try:
        extra = _read_all(_open(p), HEADER_TIMEOUT)
        assert extra is not None and extra.startswith(b"HTTP/1.1 503 "), extra
        assert b"--max-connections" in extra
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closed sockets
        try:
            if _ok(p):
                break
        except OSError:
            pass
        time.sleep(0.1)
    assert _ok(p)


def test_client_hanging_up_mid_body_logs_one_line(server):
    start = len(server.log())
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode()
    with _open(server.port, head + b'{"instances": [[[[0.5], '):
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "hung up" not in server.log()[start:] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # anything else it logs about it
    new = server.log()[start:]
    lines = [line for line in new.splitlines() if "hung up" in line]
    assert len(lines) == 1 and "after 24 of 5000 body bytes" in lines[0], new
    assert "Traceback" not in new and "ERROR" not in new, new
    assert _ok(server.port)


def test_port_in_use_fails_at_once_with_one_line():
    base = model_base("busy")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = serve_command(base, port)
        proc = subprocess.run(cmd, env=serve_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in out
    assert "serving model" not in out, "models were loaded before the port was checked"
    assert "Traceback" not in out and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- the issue's own sizes (slow) ------------------------------------------------------------


@pytest.mark.slow
def test_issue_sized_bomb_and_1100_slow_connections():
    """The 379 KB 20000x20000 PNG and 1,100 partial-header connections, server defaults."""
    srv = ServerProcess(Limits().header_timeout, Limits().body_timeout, Limits().max_connections)
    try:
        bomb = png_bomb(20000)
        assert len(bomb) < 500_000
        before = srv.rss()
        t0 = time.monotonic()
        req = {"signature_name": "serving_bytes", "instances": [_b64(bomb)]}
        status, body = call(srv.port, "POST", PREDICT, req)
        assert status == 400 and "20000x20000 PNG" in body["error"], body
        assert time.monotonic() - t0 < 2.0
        assert srv.rss() - before < 40 * 2**20
        held = [_open(srv.port, PARTIAL) for _ in range(1100)]
        try:
            t0 = time.monotonic()
            answers = [_read_all(s, max(0.1, t0 + 25 - time.monotonic())) for s in held]
            assert all(a is not None for a in answers), "connections still held"
            codes = [a[9:12] for a in answers]
            assert codes.count(b"503") >= 100 - 5 and codes.count(b"408") >= 1000 - 5
        finally:
            for s in held:
                s.close()
        assert _ok(srv.port)
    finally:
        srv.stop()
