"""kerasdl cluster kubernetes: the manifests parse and carry what a cluster needs, and two local
workers configured as the manifests configure the pods (JOB_COMPLETION_INDEX and
KERASDL_WORKER_HOSTS, no TF_CONFIG) train one multi-worker run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_distribute import (  # pytest puts tests/ on the path
    ENV,
    RECIPE,
    _chief_fingerprint,
    _fingerprint,
    _free_ports,
    _start_cluster,
)

from kerasdl.cluster.env import HOSTS_ENV, INDEX_ENV, tf_config_from_env
from kerasdl.config import validate_recipe
from kerasdl.errors import UserError


def _cluster(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    command = [sys.executable, "-m", "kerasdl", "cluster", "kubernetes", "recipe.yaml", *args]
    return subprocess.run(command, cwd=tmp, env=ENV, capture_output=True, text=True, timeout=120)


def _manifests(folder: Path) -> dict[str, dict]:
    """The objects of the manifest files by kind (each file holds one)."""
    objects = [yaml.safe_load(f.read_text()) for f in sorted(folder.glob("*.yaml"))]
    return {o["kind"]: o for o in objects}


def test_manifests_carry_what_the_cluster_needs(tmp_path: Path) -> None:
    done = _cluster(
        tmp_path,
        *("--workers", "3", "--image", "registry.example/kerasdl:gpu", "--gpus-per-worker", "2"),
        *("--out", "k8s", "--set", "training.batch_size=48"),
    )
    assert done.returncode == 0, done.stderr
    objects = _manifests(tmp_path / "k8s")
    assert sorted(objects) == ["ConfigMap", "Job", "PersistentVolumeClaim", "Service"]
    job, service = objects["Job"], objects["Service"]
    name = job["metadata"]["name"]
    assert name == "dist"  # from run.name
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    # a headless Service over the Job's pods, named as their subdomain: stable DNS names
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": name}
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/kerasdl:gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    env = {e["name"]: e["value"] for e in container["env"]}
    hosts = [f"dist-{i}.{service['metadata']['name']}:2222" for i in range(3)]
    assert env[HOSTS_ENV] == ",".join(hosts)
    assert [p["containerPort"] for p in container["ports"]] == [2222]
    assert [p["port"] for p in service["spec"]["ports"]] == [2222]
    # what a pod builds from it, with the index Kubernetes sets
    assert tf_config_from_env({**env, INDEX_ENV: "2"}) == {
        "cluster": {"worker": hosts},
        "task": {"type": "worker", "index": 2},
    }
    # the recipe: a ConfigMap mounted where the command reads it; the run folder on a shared volume
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap, claim = objects["ConfigMap"], objects["PersistentVolumeClaim"]
    recipe_file = container["command"][2]
    assert container["command"][:2] == ["kerasdl", "train"]
    (volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert recipe_file == f"{mounts[volume]}/{next(iter(configmap['data']))}"
    recipe = validate_recipe(yaml.safe_load(configmap["data"]["recipe.yaml"]))
    assert recipe.distribute.strategy == "multi_worker"
    assert recipe.training.batch_size == 48
    assert recipe.training.epochs == RECIPE["training"]["epochs"]
    (runs,) = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
    assert volumes[runs]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts[runs] == recipe.run.output_dir
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every worker reads the backups
    assert "docker build -f Dockerfile.gpu" in (tmp_path / "k8s" / "job.yaml").read_text()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--workers", "3"], "divisible by the 3 replicas"),
        (["--workers", "0"], "--workers"),
        (["--workers", "2", "--name", "My_Job"], "--name"),
    ],
)
def test_bad_cluster_arguments_write_nothing(tmp_path: Path, args: list, expected: str) -> None:
    done = _cluster(tmp_path, *args, "--image", "x", "--out", "k8s")
    assert done.returncode == 2 and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "k8s").exists()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({INDEX_ENV: "0"}, f"{HOSTS_ENV} is not"),
        ({HOSTS_ENV: "a:1,b:2"}, f"{INDEX_ENV} is not"),
        ({INDEX_ENV: "2", HOSTS_ENV: "a:1,b:2"}, "from 0 to 1"),
        ({INDEX_ENV: "-1", HOSTS_ENV: "a:1,b:2"}, "from 0 to 1"),
        ({INDEX_ENV: "0", HOSTS_ENV: "a:1,b"}, "'b' is not host:port"),
        ({INDEX_ENV: "0", HOSTS_ENV: "a:1,b:x"}, "'b:x' is not host:port"),
        ({INDEX_ENV: "0", HOSTS_ENV: "a:1,a:1"}, "listed twice"),
    ],
)
def test_malformed_worker_environment_is_one_clear_error(env: dict, expected: str) -> None:
    with pytest.raises(UserError, match=expected.replace("(", r"\(")) as err:
        tf_config_from_env(env)
    assert "\n" not in str(err.value)
    assert tf_config_from_env({}) is None  # neither set: TF_CONFIG or nothing


def test_two_local_workers_configured_as_the_manifests_train_one_run(tmp_path: Path) -> None:
    done = _cluster(tmp_path, "--workers", "2", "--image", "x", "--out", "k8s")
    assert done.returncode == 0, done.stderr
    objects = _manifests(tmp_path / "k8s")
    (container,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kerasdl", "train", "/etc/kerasdl/recipe.yaml", "--quiet"]
    # the pod's recipe, with the shared volume at ./runs instead of /runs
    recipe = yaml.safe_load(objects["ConfigMap"]["data"]["recipe.yaml"])
    recipe["run"]["output_dir"] = "runs"
    recipe["training"]["epochs"] = 2
    (tmp_path / "pod_recipe.yaml").write_text(yaml.safe_dump(recipe))
    manifest_hosts = {e["name"]: e["value"] for e in container["env"]}[HOSTS_ENV].split(",")
    assert len(manifest_hosts) == 2

    def pod_env(index: int, hosts: list[str]) -> dict[str, str]:  # the pods' DNS names -> here
        return {INDEX_ENV: str(index), HOSTS_ENV: ",".join(hosts)}

    assert "TF_CONFIG" not in ENV  # as in the pods

    procs = _start_cluster(Path("pod_recipe.yaml"), _free_ports(2), tmp_path, pod_env)
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "2 replica(s) on 2 worker(s)" in outs[0]
    runs = tmp_path / "runs" / "dist"
    (run_dir,) = list(runs.iterdir())  # one run, written by worker 0 (the chief)
    assert run_dir.name.startswith("mw-")
    assert _chief_fingerprint(runs) == _fingerprint(outs[1])  # the same weights on both
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["distribution"]["workers"] == 2 and info["loop"] == "custom"
    assert len(list(csv.DictReader((run_dir / "history.csv").open()))) == 2
    assert (run_dir / "metrics.json").is_file()
