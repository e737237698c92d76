"""``kerasdl serve``'s options reach the server: limits, the unsafe-op switch, a header timeout
enforced on a real server started the way a user starts it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest_serving import exported, free_port

from kerasdl.cli import build_parser

REPO = Path(__file__).resolve().parent.parent


def _args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_limit_and_safety_options_reach_the_repository_and_config(tmp_path: Path) -> None:
    from kerasdl.commands import serve as cmd
    from kerasdl.serving.limits import limits_from_args

    args = _args(
        str(tmp_path), "--allow-unsafe-ops", "--max-image-pixels", "5000", "--header-timeout", "3"
    )
    repo = cmd._repository(args)
    assert repo.allow_unsafe_ops is True
    limits = limits_from_args(args)
    assert limits.max_image_pixels == 5000 and limits.header_timeout == 3
    assert cmd._repository(_args(str(tmp_path))).allow_unsafe_ops is False


def test_serve_help_does_not_import_the_web_server_or_tensorflow() -> None:
    code = (
        "import sys, kerasdl.commands.serve as s; "
        "names = ('starlette', 'tensorflow', 'grpc', 'uvicorn'); "
        "print(sorted(m for m in names if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_header_timeout_option_closes_a_slow_client(tmp_path: Path) -> None:
    base = tmp_path / "models"
    shutil.copytree(exported().parent, base / "digits")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "kerasdl"), "serve", str(base), "--port", str(port)]
        + ["--header-timeout", "1"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /v1/models/digits HTTP/1.1\r\nHost: x\r\n\r\n")
                    if b"AVAILABLE" in s.recv(65536):
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /v1/models/digits HTTP/1.1\r\nHo")  # half a header, then nothing
            start = time.time()
            answer = s.recv(65536)
            waited = time.time() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert waited < 5, waited
    finally:
        proc.terminate()
        proc.wait(timeout=60)
