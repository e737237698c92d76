"""Version lifecycle of the model server under load: rollback, deleting the served version,
half-copied versions and load retries, version policies and labels from a TF Serving model config
file reloaded while serving, the status of every change, and shutdown with requests in flight.

The fast tests serve a tiny SavedModel (loads in ~20 ms) whose only output is its own version
number, so every answer says which version served it; loads are slowed to 0.3 s, the way a real
model loads, so an outage window between unloading one version and loading another would show.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest_serving import (
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

from version_helpers import (  # noqa: E402
    Clients,
    Server,
    SlowServable,
    StatusWatcher,
    X,
    event_index,
    http_status,
    new_repo,
    put,
    states,
)

import kerasdl.serving.repository as repository_module  # noqa: E402
from kerasdl.serving.app import ServerConfig  # noqa: E402
from kerasdl.serving.version_policy import (  # noqa: E402
    VersionPolicy,
    VersionSnapshot,
    next_action,
)


@pytest.fixture
def slow_loads(monkeypatch):
    """Loads take LOAD_DELAY seconds longer, like a real model's."""
    monkeypatch.setattr(repository_module, "Servable", SlowServable)


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


def test_a_version_folder_with_leading_zeros_serves_as_its_number() -> None:
    """TF Serving reads a version folder's name as a number and loads from the folder itself:
    ``0006`` serves as version 6 (kerasdl rebuilt the path as ``6`` and never loaded it)."""
    base = fresh_dir("zeros")
    put(base, "m", 1)
    shutil.copytree(tiny(6), base / "m" / "0006")
    repo = new_repo(base)
    with Server(repo) as srv:
        wait_until(
            lambda: http_status(srv.port, "/v1/models/m").get(6, ("",))[0] == "AVAILABLE",
            "version 6 available",
        )
        code, body = call(srv.port, "POST", "/v1/models/m/versions/6:predict", {"instances": X})
        assert code == 200 and body["predictions"] == [6.0], body
        assert http_status(srv.port, "/v1/models/m")[6] == ("AVAILABLE", "OK", "")


def test_metadata_of_a_version_deleted_while_served_is_still_the_graphs() -> None:
    """TF Serving keeps a loaded version's signature defs in memory; kerasdl reads them at load
    time, so a version whose folder is deleted while it is still served (until the next one is
    up) answers its metadata with the graph's own tensor names, not a made-up description."""
    from kerasdl.serving.metadata import model_metadata, signature_defs
    from kerasdl.serving.servable import Servable

    folder = put(fresh_dir("meta"), "m", 3)
    on_disk = signature_defs(folder)
    servable = Servable("m", 3, folder)
    shutil.rmtree(folder)
    body = model_metadata(servable)
    assert body["metadata"]["signature_def"]["signature_def"] == on_disk
    assert body["model_spec"] == {"name": "m", "signature_name": "", "version": "3"}
