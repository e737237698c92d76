"""TF Serving's model config file: parsing, several models with version policies and labels,
reloading while serving with no failed request, and its CLI errors."""

from __future__ import annotations

import inspect
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_serving import (
    call,
    fresh_dir,
    wait_until,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from version_helpers import (  # noqa: E402
    Clients,
    Server,
    X,
    event_index,
    http_status,
    put,
    states,
)

from kerasdl.serving.model_config import (  # noqa: E402
    ModelConfigError,
    load_model_config,
    parse_model_config,
)
from kerasdl.serving.repository import ModelRepository  # noqa: E402
from kerasdl.serving.version_policy import (  # noqa: E402
    VersionPolicy,
)

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
