"""Version lifecycle of the model server under load: rollback, deleting the served version,
half-copied versions and load retries, version policies and labels from a TF Serving model config
file reloaded while serving, the status of every change, and shutdown with requests in flight.

The fast tests serve a tiny SavedModel (loads in ~20 ms) whose only output is its own version
number, so every answer says which version served it; loads are slowed to 0.3 s, the way a real
model loads, so an outage window between unloading one version and loading another would show.
"""

from __future__ import annotations

import http.client
import inspect
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest_serving import (
    UvicornThread,
    call,
    digits_data,
    free_port,
    fresh_dir,
    model_base,
    staged_version,
    start_serve,
    tiny,
    wait_ready,
    wait_until,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import kerasdl.serving.repository as repository_module  # noqa: E402
from kerasdl.serving.app import ServerConfig, create_app  # noqa: E402
from kerasdl.serving.model_config import (  # noqa: E402
    ModelConfigError,
    load_model_config,
    parse_model_config,
)
from kerasdl.serving.repository import ModelRepository  # noqa: E402
from kerasdl.serving.servable import Servable  # noqa: E402
from kerasdl.serving.version_policy import (  # noqa: E402
    VersionPolicy,
    VersionSnapshot,
    next_action,
)

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


@pytest.fixture
def slow_loads(monkeypatch):
    monkeypatch.setattr(repository_module, "Servable", SlowServable)


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


# --- the policies, without a server ---------------------------------------------------------


def test_version_policies_and_availability_preserving_order():
    latest = VersionPolicy("latest", 1)
    assert latest.aspired([1, 2, 3]) == {3}
    assert latest.aspired([1, 2, 3], failed={3}) == {2, 3}  # 2 stands in while 3 is retried
    assert VersionPolicy("latest", 2).aspired([1, 2, 3]) == {2, 3}
    assert VersionPolicy("latest", 0).aspired([1, 2]) == {2}  # TF Serving: at least one
    assert VersionPolicy("all").aspired([1, 5]) == {1, 5}
    assert VersionPolicy("specific", versions=(1, 4)).aspired([1, 2, 3]) == {1}
    assert latest.aspired([]) == set()
    with pytest.raises(ValueError, match="version policy"):
        VersionPolicy("newest")

    def snap(v, state, aspired, loadable=False):
        return VersionSnapshot(v, state, aspired, loadable)

    # A new version: load it first, keep the old one meanwhile, then unload the old one.
    assert next_action([snap(1, "AVAILABLE", False), snap(2, "START", True, True)]) == ("load", 2)
    assert next_action([snap(1, "AVAILABLE", False), snap(2, "LOADING", True)]) is None
    assert next_action([snap(1, "AVAILABLE", False), snap(2, "AVAILABLE", True)]) == ("unload", 1)
    # The newest was deleted: reload the old one (rollback) before unloading the deleted one.
    assert next_action([snap(2, "AVAILABLE", False), snap(1, "START", True, True)]) == ("load", 1)
    # A failed version keeps the old one serving.
    assert next_action([snap(1, "AVAILABLE", False), snap(2, "END", True)]) is None
    # Nothing aspired: unload (the model was removed); two old ones: unload the lower first.
    assert next_action([snap(1, "AVAILABLE", False)]) == ("unload", 1)
    old = [snap(1, "AVAILABLE", False), snap(2, "AVAILABLE", False), snap(3, "START", True, True)]
    assert next_action(old) == ("unload", 1)


# --- defect 1: rollback after a hot swap ----------------------------------------------------


def test_rollback_after_hot_swap_reloads_the_previous_version(slow_loads):
    base = fresh_dir("rollback")
    put(base, "m", 1)
    repo = new_repo(base)
    with Server(repo) as srv, Clients(srv.port, ["/v1/models/m:predict"], per_url=4) as clients:
        seen = StatusWatcher(srv.port, "/v1/models/m")
        clients.wait_for(1)
        # A hot swap by copying (not atomic: the copy may be seen half done, then retried).
        t_copy = time.monotonic()
        put(base, "m", 2)
        clients.wait_for(2, since=t_copy)
        wait_until(lambda: http_status(srv.port, "/v1/models/m")[1][0] == "END", "v1 unloaded")
        # Roll back: remove the new version. Version 1 must come back, with no failed request.
        t_rm = time.monotonic()
        shutil.rmtree(base / "m" / "2")
        clients.wait_for(1, since=t_rm, n=20)
        wait_until(lambda: http_status(srv.port, "/v1/models/m")[2][0] == "END", "v2 unloaded")
        t_end = time.monotonic()
        clients.wait_for(1, since=t_end, n=10)
        assert call(srv.port, "GET", "/readyz")[0] == 200
        seen.stop()
    assert clients.failures() == []
    assert set(clients.versions(since=t_end)) == {1}
    # The status showed each version loading, serving and ending, through the HTTP endpoint.
    assert seen.states(1) == ["AVAILABLE", "END", "LOADING", "AVAILABLE"]
    assert seen.states(2)[-3:] == ["LOADING", "AVAILABLE", "END"]
    assert repo.ready()[0]
    assert states(repo, "m", 1) == [
        "START", "LOADING", "AVAILABLE", "UNLOADING", "END",  # replaced by version 2
        "START", "LOADING", "AVAILABLE",  # reloaded when version 2 was deleted
    ]  # fmt: skip
    # Availability preserved: version 1 was serving again before version 2 was unloaded.
    assert event_index(repo, "m", 1, "AVAILABLE", last=True) < event_index(
        repo, "m", 2, "UNLOADING"
    )
    assert event_index(repo, "m", 2, "AVAILABLE") < event_index(repo, "m", 1, "UNLOADING")
    status = repo.status("m")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "END"), ("1", "AVAILABLE")]


# --- defect 2: deleting the served version while an older one exists ------------------------


def test_deleting_the_served_version_loads_the_older_one_first(slow_loads):
    base = fresh_dir("delete")
    put(base, "m", 1)
    put(base, "m", 2)
    repo = new_repo(base)
    with Server(repo) as srv, Clients(srv.port, ["/v1/models/m:predict"], per_url=4) as clients:
        clients.wait_for(2)
        assert http_status(srv.port, "/v1/models/m") == {2: ("AVAILABLE", "OK", "")}
        assert call(srv.port, "GET", "/v1/models/m/versions/1")[0] == 404  # never loaded
        t_rm = time.monotonic()
        shutil.rmtree(base / "m" / "2")
        clients.wait_for(1, since=t_rm, n=20)
        wait_until(lambda: 2 not in repo.summary()["models"][0]["available_versions"], "unload")
        assert http_status(srv.port, "/v1/models/m") == {
            2: ("END", "OK", ""),
            1: ("AVAILABLE", "OK", ""),
        }
        assert call(srv.port, "GET", "/readyz")[0] == 200
    assert clients.failures() == []
    assert len(clients.log) > 50
    assert states(repo, "m", 1) == ["START", "LOADING", "AVAILABLE"]
    assert event_index(repo, "m", 1, "AVAILABLE") < event_index(repo, "m", 2, "UNLOADING")


# --- defect 3: half-copied versions are retried, the error shows meanwhile ------------------


def _copy_rest(src: Path, dest: Path) -> None:
    """Complete a version folder that so far holds only saved_model.pb."""
    for item in src.iterdir():
        if not (dest / item.name).exists():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest / item.name)


def test_half_copied_version_is_retried_and_reports_the_error(slow_loads):
    base = fresh_dir("half")
    put(base, "m", 1)
    repo = new_repo(base, load_retry_interval=0.2)
    with Server(repo) as srv, Clients(srv.port, ["/v1/models/m:predict"], per_url=4) as clients:
        clients.wait_for(1)
        half = base / "m" / "2"
        half.mkdir()
        shutil.copy2(tiny(2) / "saved_model.pb", half)  # the variables come later
        wait_until(lambda: "2" in str(repo.status("m")), "version 2 seen")
        wait_until(lambda: http_status(srv.port, "/v1/models/m")[2][2] != "", "v2 error shown")
        status = http_status(srv.port, "/v1/models/m")
        assert status[2][:2] == ("LOADING", "NOT_FOUND") and "variables" in status[2][2]
        assert status[1] == ("AVAILABLE", "OK", "")
        assert http_status(srv.port, "/v1/models/m/versions/2")[2][0] == "LOADING"
        time.sleep(1.0)  # several retries fail meanwhile
        assert states(repo, "m", 2).count("LOADING") >= 3 and "END" not in states(repo, "m", 2)
        t_done = time.monotonic()
        _copy_rest(tiny(2), half)
        clients.wait_for(2, since=t_done, n=20)
        wait_until(lambda: http_status(srv.port, "/v1/models/m")[1][0] == "END", "v1 unloaded")
        assert http_status(srv.port, "/v1/models/m")[2] == ("AVAILABLE", "OK", "")
    assert clients.failures() == []
    assert set(clients.versions(since=0, url=None)[:20]) == {1}


def test_failed_load_gives_up_then_retries_when_the_files_change():
    base = fresh_dir("giveup")
    put(base, "m", 1)
    half = base / "m" / "2"
    half.mkdir()
    shutil.copy2(tiny(2) / "saved_model.pb", half)
    repo = new_repo(base, max_load_retries=2, load_retry_interval=0.05)
    repo.start()
    try:
        # Started with a broken newest version: the previous one serves at once.
        assert repo.get("m").version == 1 and repo.ready()[0]
        wait_until(lambda: repo.status("m", 2)["model_version_status"][0]["state"] == "END", "END")
        (v2,) = repo.status("m", 2)["model_version_status"]
        assert v2["status"]["error_code"] == "NOT_FOUND" and v2["status"]["error_message"]
        assert states(repo, "m", 2).count("LOADING") == 1 + 2 + 2  # attempt + 2 retries, each
        time.sleep(0.3)  # given up: no more attempts while the folder stays as it is
        assert len(states(repo, "m", 2)) == 7 and repo.get("m").version == 1
        _copy_rest(tiny(2), half)  # the copy finishes after the retries ran out
        wait_until(lambda: repo.get("m").version == 2, "v2 served after its files changed")
        wait_until(lambda: repo.status("m", 1)["model_version_status"][0]["state"] == "END", "v1")
        assert repo.status("m", 2)["model_version_status"][0]["status"]["error_code"] == "OK"
        # A corrupt saved_model.pb is UNKNOWN; missing variable data is TF's own code.
        bad = base / "m" / "3"
        bad.mkdir()
        (bad / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_until(lambda: "3" in json.dumps(repo.status("m")), "v3 seen")
        wait_until(lambda: repo.status("m", 3)["model_version_status"][0]["state"] == "END", "3")
        (v3,) = repo.status("m", 3)["model_version_status"]
        assert v3["status"]["error_code"] == "UNKNOWN" and "parse" in v3["status"]["error_message"]
        assert repo.get("m").version == 2
    finally:
        repo.stop()


# --- TF Serving's model config file ---------------------------------------------------------

CONFIG = """
model_config_list {
  config {
    name: "a"
    base_path: "a"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "b" base_path: "%s" model_version_policy { all {} } }
  config {
    name: "c"
    base_path: "c"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""


def test_model_config_file_parses_tf_serving_text_and_rejects_mistakes(tmp_path):
    specs = parse_model_config(CONFIG % "/abs/b", tmp_path, "models.config")
    assert [s.name for s in specs] == ["a", "b", "c"]
    a, b, c = specs
    assert a.base_path == tmp_path / "a" and b.base_path == Path("/abs/b")
    assert a.policy == VersionPolicy("specific", versions=(1, 2))
    assert dict(a.labels) == {"canary": 2, "stable": 1}
    assert b.policy == VersionPolicy("all") and c.policy == VersionPolicy("latest", 2)
    assert parse_model_config('model_config_list { config { name: "x" base_path: "/x" } }')[
        0
    ].policy == VersionPolicy("latest", 1)  # TF Serving's default policy
    assert parse_model_config("") == []

    def error(text: str) -> str:
        with pytest.raises(ModelConfigError) as info:
            parse_model_config(text, tmp_path, "models.config")
        assert "\n" not in str(info.value)
        return str(info.value)

    one = 'model_config_list { config { name: "x" base_path: "/x" %s } }'
    assert "2:3" in error("model_config_list {\n  confg { name: 'x' }\n}")
    assert "more than once" in error(
        'model_config_list { config { name: "x" base_path: "/x" } '
        'config { name: "x" base_path: "/y" } }'
    )
    assert "base_path" in error('model_config_list { config { name: "x" } }')
    assert "name" in error('model_config_list { config { base_path: "/x" } }')
    assert "model_platform" in error(one % 'model_platform: "pytorch"')
    assert "at least one version" in error(one % "model_version_policy { specific { } }")
    assert "never serves" in error(
        one % 'model_version_policy { specific { versions: 1 } } version_labels { key: "s" '
        "value: 2 }"
    )
    with pytest.raises(ModelConfigError, match="Cannot read model config file"):
        load_model_config(tmp_path / "missing.config")
    with pytest.raises(ModelConfigError, match="not a ModelServerConfig"):
        ModelRepository(model_config_file=_write(tmp_path / "bad.config", "model_config_list {"))


def _write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # as a config management tool writes it: atomically
    return path


def _label_routes_supported() -> bool:
    """Whether the app routes /labels/L through ``ModelRepository.version_for_label``."""
    import kerasdl.serving.app as app_module

    return "version_for_label" in inspect.getsource(app_module)


def test_model_config_serves_several_models_policies_and_labels():
    root = fresh_dir("config")
    for v in (1, 2, 3):
        put(root, "a", v)
        put(root, "c", v)
    put(root / "elsewhere", "b", 4)
    put(root / "elsewhere", "b", 7)
    text = (CONFIG % (root / "elsewhere" / "b")).rstrip()[:-1]
    text += 'config { name: "z" base_path: "not-yet" }\n}\n'  # no folder: not served, no error
    conf = _write(root / "models.config", text)
    repo = ModelRepository(model_config_file=conf, poll_interval=0.05)
    with Server(repo) as srv:
        p = srv.port
        assert call(p, "GET", "/readyz")[0] == 200
        code, body = call(p, "POST", "/v1/models/z:predict", {"instances": X})
        assert code == 404 and "Latest(z)" in body["error"]
        put(root, "not-yet", 5)
        wait_until(lambda: call(p, "GET", "/v1/models/z")[0] == 200, "z seen once it exists")
        wait_until(lambda: http_status(p, "/v1/models/z")[5][0] == "AVAILABLE", "z served")
        assert http_status(p, "/v1/models/a") == {
            1: ("AVAILABLE", "OK", ""),
            2: ("AVAILABLE", "OK", ""),
        }
        assert http_status(p, "/v1/models/b") == {
            4: ("AVAILABLE", "OK", ""),
            7: ("AVAILABLE", "OK", ""),
        }
        assert http_status(p, "/v1/models/c") == {
            2: ("AVAILABLE", "OK", ""),
            3: ("AVAILABLE", "OK", ""),
        }

        def answer(url: str) -> int:
            code, body = call(p, "POST", url, {"instances": X})
            assert code == 200, (url, body)
            return int(body["predictions"][0])

        assert answer("/v1/models/a:predict") == 2  # latest of the specific versions
        assert answer("/v1/models/a/versions/1:predict") == 1
        assert answer("/v1/models/b:predict") == 7
        assert answer("/v1/models/c/versions/2:predict") == 2
        assert call(p, "POST", "/v1/models/a/versions/3:predict", {"instances": X})[0] == 404
        # Labels, through the repository (what the HTTP routes call).
        assert repo.get("a", label="stable").version == 1
        assert repo.get("a", label="canary").version == 2
        assert repo.status("a", label="canary")["model_version_status"][0]["version"] == "2"
        with pytest.raises(Exception, match="Unrecognized servable version label: beta") as info:
            repo.get("a", label="beta")
        assert info.value.status == 400  # TF Serving: INVALID_ARGUMENT
        summary = {m["name"]: m for m in repo.summary()["models"]}
        assert summary["a"]["version_labels"] == {"canary": "2", "stable": "1"}
        assert summary["a"]["version_policy"] == "specific { versions: 1 versions: 2 }"
        assert summary["c"]["available_versions"] == ["3", "2"]
        assert repo.summary()["model_config_file"]["error"] == ""
        if _label_routes_supported():
            assert answer("/v1/models/a/labels/stable:predict") == 1
            assert answer("/v1/models/a/labels/canary:predict") == 2
            assert http_status(p, "/v1/models/a/labels/canary") == {2: ("AVAILABLE", "OK", "")}
            code, body = call(p, "GET", "/v1/models/a/labels/canary/metadata")
            assert code == 200 and body["model_spec"]["version"] == "2"
            code, body = call(p, "POST", "/v1/models/a/labels/beta:predict", {"instances": X})
            assert code == 400 and "Unrecognized servable version label" in body["error"]


def test_model_config_reload_under_load_drops_no_request():
    root = fresh_dir("reload")
    for v in (1, 2):
        put(root, "a", v)
        put(root, "b", v)
    put(root, "d", 1)
    put(root, "e", 1)
    first = """model_config_list {
      config { name: "a" base_path: "a" }
      config { name: "b" base_path: "b" model_version_policy { specific { versions: 1 } }
               version_labels { key: "stable" value: 1 } }
      config { name: "d" base_path: "d" }
    }"""
    second = """model_config_list {
      config { name: "a" base_path: "a" model_version_policy { all {} } }
      config { name: "b" base_path: "b" model_version_policy { specific { versions: 2 } }
               version_labels { key: "stable" value: 2 } }
      config { name: "e" base_path: "e" }
    }"""
    conf = _write(root / "models.config", first)
    repo = ModelRepository(model_config_file=conf, poll_interval=0.05, config_poll_interval=0.05)
    label_log: list[int | str] = []
    stop = threading.Event()

    def label_client() -> None:  # requests by label, the way the HTTP route resolves them
        while not stop.is_set():
            try:
                servable = repo.get("b", label="stable")
                out = servable.signature("serving_default")({"x": np.ones((1, 2), "float32")})
                label_log.append(int(out["version"][0]))
            except Exception as err:  # noqa: BLE001 - recorded as a failure
                label_log.append(repr(err))
            time.sleep(0.003)

    urls = ["/v1/models/a:predict", "/v1/models/b:predict"]
    with Server(repo) as srv, Clients(srv.port, urls, per_url=2) as clients:
        labels = threading.Thread(target=label_client, daemon=True)
        labels.start()
        clients.wait_for(1, url=urls[1])
        assert call(srv.port, "GET", "/v1/models/d")[0] == 200
        assert call(srv.port, "GET", "/v1/models/e")[0] == 404
        t_reload = time.monotonic()
        _write(conf, second)
        clients.wait_for(2, url=urls[1], since=t_reload, n=20)
        wait_until(lambda: repo.get("b", label="stable").version == 2, "label moved")
        wait_until(lambda: call(srv.port, "GET", "/v1/models/e")[0] == 200, "model e added")
        wait_until(lambda: http_status(srv.port, "/v1/models/d")[1][0] == "END", "d removed")
        wait_until(lambda: http_status(srv.port, "/v1/models/b")[1][0] == "END", "b v1 unloaded")
        code, body = call(srv.port, "POST", "/v1/models/d:predict", {"instances": X})
        assert code == 404 and "Latest(d)" in body["error"]
        assert http_status(srv.port, "/v1/models/a") == {
            1: ("AVAILABLE", "OK", ""),
            2: ("AVAILABLE", "OK", ""),
        }
        # A broken config is reported and changes nothing.
        _write(conf, "model_config_list { config { name: 'a' ")
        wait_until(lambda: repo.summary()["model_config_file"]["error"] != "", "config error")
        assert "not a ModelServerConfig" in repo.summary()["model_config_file"]["error"]
        t_bad = time.monotonic()
        clients.wait_for(2, url=urls[1], since=t_bad, n=10)
        stop.set()
        labels.join(timeout=10)
    assert clients.failures() == []
    assert set(clients.versions(urls[0])) == {2}
    assert [v for v in label_log if not isinstance(v, int)] == []
    assert label_log[0] == 1 and label_log[-1] == 2
    # The label moved only once version 2 was serving, and version 1 was unloaded after that.
    assert event_index(repo, "b", 2, "AVAILABLE") < event_index(repo, "b", 1, "UNLOADING")
    assert states(repo, "d", 1) == ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]


# --- shutdown with requests in flight -------------------------------------------------------


def _shutdown_under_load(port: int, shut_down: Callable[[], None], clients: int = 6) -> None:
    """Clients send requests on fresh connections; shut down; the in-flight ones must succeed.

    A request counts as in flight when it was sent at least 50 ms before the shutdown and was not
    answered by then; requests sent later may be refused (the server stops accepting).
    """
    log: list[tuple[float, float, object]] = []
    stop = threading.Event()
    body = json.dumps({"instances": X}).encode()

    def client() -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            sent = float("inf")
            try:
                conn.request(
                    "POST", "/v1/models/m:predict", body, {"Content-Type": "application/json"}
                )
                sent = time.monotonic()
                resp = conn.getresponse()
                result: object = resp.status
                resp.read()
            except (OSError, http.client.HTTPException) as err:
                result = repr(err)
            finally:
                conn.close()
            log.append((sent, time.monotonic(), result))
            if result != 200:
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    wait_until(lambda: len(log) >= 10, "requests before shutdown")
    time.sleep(0.2)  # mid-way through the next round of requests
    t_shut = time.monotonic()
    shut_down()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    in_flight = [e for e in log if e[0] < t_shut - 0.05 and e[1] > t_shut]
    assert len(in_flight) >= 2, f"no request was in flight at the shutdown: {log[-12:]}"
    assert [e for e in in_flight if e[2] != 200] == []
    assert [e for e in log if e[0] < t_shut - 0.05 and e[2] != 200] == []


def test_shutdown_under_load_finishes_requests_in_flight():
    base = fresh_dir("shutdown")
    put(base, "m", 1)
    # Each request waits up to 0.4 s in the batcher, so several are in flight at any moment.
    config = ServerConfig(batching=True, batch_timeout_ms=400, batch_threads=1, batch_size=64)
    srv = Server(new_repo(base), config)
    with srv:
        # uvicorn's SIGTERM handler does exactly this: stop accepting, finish what is in flight.
        _shutdown_under_load(srv.port, lambda: setattr(srv.server, "should_exit", True))
        srv.thread.join(timeout=30)
        assert not srv.thread.is_alive()


@pytest.mark.slow
def test_cli_sigterm_under_load_finishes_requests_in_flight():
    base = fresh_dir("sigterm")
    put(base, "m", 1)
    port = free_port()
    options = ["--batching", "--batch-timeout-ms", "400", "--batch-threads", "1"]
    proc = start_serve(base, port, *options)
    try:
        wait_ready(port, proc, timeout=120)
        _shutdown_under_load(port, lambda: proc.send_signal(signal.SIGTERM), clients=8)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the CLI --------------------------------------------------------------------------------


def test_serve_cli_model_config_errors_are_one_line(tmp_path, capsys):
    from kerasdl.cli import main

    assert main(["serve"]) == 2
    assert "either MODEL_BASE or --model-config-file" in capsys.readouterr().err
    conf = _write(tmp_path / "models.config", "model_config_list { config { nme: 'a' } }")
    assert main(["serve", str(tmp_path), "--model-config-file", str(conf)]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["serve", "--model-config-file", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nme" in err and "models.config" in err
    assert main(["serve", "--model-config-file", str(tmp_path / "nope.config")]) == 2
    assert "Model config file not found" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-num-load-retries", "-1"]) == 2
    assert "--max-num-load-retries" in capsys.readouterr().err


# --- the scenario with a real model, 8 clients (slow) -------------------------------


@pytest.mark.slow
def test_digits_model_rollback_and_delete_under_eight_clients():
    x, _ = digits_data()
    base = model_base("digits-versions")
    repo = new_repo(base, poll_interval=0.5, load_retry_interval=0.5)
    url = "/v1/models/digits:predict"
    with Server(repo) as srv:
        errors: list = []
        stop = threading.Event()
        served: list[str] = []

        def client() -> None:
            while not stop.is_set():
                code, body = call(srv.port, "POST", url, {"instances": x[1:2].tolist()})
                if code != 200:
                    errors.append((code, body))
                else:
                    served.append(body["predictions"][0]["class_name"])

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        shutil.copytree(staged_version(), base / "digits" / "2")  # v2 always answers "zero"
        wait_until(lambda: repo.get("digits").version == 2, "v2 served", timeout=120)
        shutil.rmtree(base / "digits" / "2")  # roll back
        wait_until(lambda: repo.get("digits").version == 1, "v1 served again", timeout=120)
        shutil.copytree(staged_version(), base / "digits" / "3")
        wait_until(lambda: repo.get("digits").version == 3, "v3 served", timeout=120)
        shutil.rmtree(base / "digits" / "3")  # delete the served version: v1 again
        wait_until(lambda: repo.get("digits").version == 1, "v1 served again", timeout=120)
        n = len(served)
        wait_until(lambda: len(served) > n + 50, "answers after the changes")
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert served[-1] != "zero" and "zero" in served
