"""Helpers of the version-lifecycle serving tests: tiny versions, slowed loads, a server in a
thread, client threads that record every answer, and a watcher of the status endpoint."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest_serving import (
    UvicornThread,
    call,
    tiny,
    wait_until,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from kerasdl.serving.app import ServerConfig, create_app  # noqa: E402
from kerasdl.serving.repository import ModelRepository  # noqa: E402
from kerasdl.serving.servable import Servable  # noqa: E402

LOAD_DELAY = 0.3
X = [[1.0, 2.0]]


# --- fixtures -------------------------------------------------------------------------------


def put(base: Path, model: str, version: int, value: int | None = None) -> Path:
    """Copy the tiny model answering ``value`` (default: the version) to base/model/version."""
    dest = base / model / str(version)
    shutil.copytree(tiny(value if value is not None else version), dest)
    return dest


class SlowServable(Servable):
    """A servable that takes LOAD_DELAY seconds longer to load, like a real model."""

    def __init__(self, *args, **kwargs) -> None:
        time.sleep(LOAD_DELAY)
        super().__init__(*args, **kwargs)


class Server(UvicornThread):
    """uvicorn serving a repository in a thread on a free loopback port."""

    def __init__(self, repo: ModelRepository, config: ServerConfig | None = None) -> None:
        super().__init__(create_app(repo, config or ServerConfig()))
        self.repo = repo


class Clients:
    """Client threads posting predict requests in a loop on keep-alive connections.

    Each answer is recorded as (time, url, status, body); a failed connection as status 0.
    """

    def __init__(self, port: int, urls: list[str], per_url: int = 2, pause: float = 0.003):
        self.port, self.urls, self.pause = port, urls, pause
        self.log: list[tuple[float, str, int, object]] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(url,), daemon=True)
            for url in urls
            for _ in range(per_url)
        ]

    def _run(self, url: str) -> None:
        body = json.dumps({"instances": X}).encode()
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", url, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, text = resp.status, resp.read()
                self.log.append((time.monotonic(), url, status, json.loads(text)))
            except (OSError, http.client.HTTPException) as err:
                self.log.append((time.monotonic(), url, 0, repr(err)))
                conn = None
            time.sleep(self.pause)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def failures(self, url: str | None = None) -> list:
        return [e for e in self.log if e[2] != 200 and (url is None or e[1] == url)]

    def versions(self, url: str | None = None, since: float = 0.0) -> list[int]:
        return [
            int(e[3]["predictions"][0])
            for e in list(self.log)
            if e[2] == 200 and e[0] >= since and (url is None or e[1] == url)
        ]

    def wait_for(self, version: int, url: str | None = None, since: float = 0.0, n: int = 10):
        """Wait until ``n`` answers from ``version`` arrived after ``since``."""
        wait_until(
            lambda: self.versions(url, since).count(version) >= n, f"{n} answers of v{version}"
        )


class StatusWatcher:
    """Polls a status URL every few ms in a thread, keeping each version's distinct states."""

    def __init__(self, port: int, path: str) -> None:
        self.seen: dict[int, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port, path), daemon=True)
        self._thread.start()

    def _run(self, port: int, path: str) -> None:
        while not self._stop.is_set():
            for version, (state, _, _) in http_status(port, path).items():
                states = self.seen.setdefault(version, [])
                if not states or states[-1] != state:
                    states.append(state)
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def states(self, version: int) -> list[str]:
        """The states seen, less START and UNLOADING (they last microseconds here)."""
        out: list[str] = []
        for state in self.seen.get(version, []):
            if state not in ("START", "UNLOADING") and (not out or out[-1] != state):
                out.append(state)
        return out


def states(repo: ModelRepository, name: str, version: int) -> list[str]:
    """The states ``version`` went through, in order."""
    return [s.state for _, n, s in repo.events() if n == name and s.version == version]


def event_index(repo: ModelRepository, name: str, version: int, state: str, last=False) -> int:
    found = [
        i
        for i, (_, n, s) in enumerate(repo.events())
        if n == name and s.version == version and s.state == state
    ]
    assert found, f"{name} v{version} never reached {state}"
    return found[-1] if last else found[0]


def http_status(port: int, path: str) -> dict[int, tuple[str, str, str]]:
    """GET a status URL: {version: (state, error_code, error_message)}."""
    code, body = call(port, "GET", path)
    assert code == 200, body
    return {
        int(s["version"]): (s["state"], s["status"]["error_code"], s["status"]["error_message"])
        for s in body["model_version_status"]
    }


def new_repo(base: Path, **kwargs) -> ModelRepository:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("load_retry_interval", 0.1)
    kwargs.setdefault("max_load_retries", 100)
    return ModelRepository(base, **kwargs)
