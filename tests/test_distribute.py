"""tf.distribute: mirrored over two logical CPUs, a two-worker localhost cluster, kill-and-resume.

Logical devices must be configured before TensorFlow starts, so every case runs in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}

RECIPE = {
    "model": {"name": "simple_cnn", "filters": [8, 16], "convs_per_stage": 1, "dropout": 0.0},
    "data": {"source": "digits", "image_size": 8, "channels": 1},
    "training": {
        "epochs": 4,
        "batch_size": 64,
        "log_images": 0,
        "optimizer": {"name": "adam", "learning_rate": 0.01},
    },
    "run": {"name": "dist", "seed": 0},
}


def _recipe(tmp: Path, **distribute) -> Path:
    r = json.loads(json.dumps(RECIPE))
    r["run"]["output_dir"] = str(tmp / "runs")
    r["distribute"] = distribute
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


# Two logical CPU devices, a seeded generator and a small seeded network; indented like the
# scripts below, which are dedented as a whole.
TWO_CPUS = """
        import numpy as np, tensorflow as tf
        import keras, kerasdl
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        rng = np.random.default_rng(0)

        def tiny_net(classes, **kw):
            keras.utils.set_random_seed(1)
            kw = {"filters": [8], "norm": "none", "dropout": 0.0, "input_shape": (8, 8, 1), **kw}
            return kerasdl.create_model("simple_cnn", num_classes=classes, **kw)
"""


def _python(code: str, timeout: int = 240) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# The three one-step comparisons below share one subprocess (one TensorFlow start instead of
# three, ~15 s less) and one MirroredStrategy over the two logical CPUs (a second instance in the
# same process breaks the first's collectives); each runs in a function of its own, with its own
# generator and seeds, and reports its numbers or its traceback under its own name for its own
# test.
MIRRORED = """
        x = rng.random((32, 8, 8, 1), dtype=np.float32)
        y = keras.utils.to_categorical(rng.integers(0, 10, 32), 10)

        def one_step(strategy):
            with strategy.scope():
                m = tiny_net(10)
                m.compile(keras.optimizers.SGD(0.1),
                          keras.losses.CategoricalCrossentropy(from_logits=True))
            m.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
            return m.get_weights()

        assert mirrored.num_replicas_in_sync == 2
        a = one_step(tf.distribute.get_strategy())
        b = one_step(mirrored)
        diff = max(float(np.abs(p - q).max()) for p, q in zip(a, b))
        moved = max(float(np.abs(p).max()) for p in a)
        print("DIFF", diff, moved)
"""

SYNC_BATCHNORM = """
        from kerasdl.layers.normalization import configure_batch_norm
        x = rng.random((32, 8, 8, 1), dtype=np.float32)
        x[16:] *= 3.0  # the two replicas' halves have different statistics
        y = keras.utils.to_categorical(rng.integers(0, 10, 32), 10)

        def one_step(strategy, sync):
            with strategy.scope():
                m = tiny_net(10, norm="batch")
                configure_batch_norm(m, synchronized=sync)
                m.compile(keras.optimizers.SGD(0.1),
                          keras.losses.CategoricalCrossentropy(from_logits=True))
            m.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
            return m.get_weights()

        single = one_step(tf.distribute.get_strategy(), False)
        synced = one_step(mirrored, True)
        local = one_step(mirrored, False)
        print("SYNC", max(float(np.abs(p - q).max()) for p, q in zip(single, synced)))
        print("LOCAL", max(float(np.abs(p - q).max()) for p, q in zip(single, local)))
"""

FIXMATCH = """
        from kerasdl.data import ssl
        from kerasdl.methods import FixMatch
        x = rng.random((80, 8, 8, 1), dtype=np.float32)
        y = np.arange(80) % 4
        labelled, unlabelled = ssl.split_labelled((x, y), 4, seed=0)
        data = ssl.semi_supervised_dataset(labelled, unlabelled, 8, num_classes=4, mu=2,
                                           views="weak_strong", flip=False, seed=0)
        batch = next(iter(data))
        fixed = tf.data.Dataset.from_tensors(batch)

        def one_step(strategy):
            with strategy.scope():
                net = tiny_net(4)
                model = FixMatch(net, num_classes=4, mu=2, threshold=0.0)
                model.compile(keras.optimizers.SGD(0.1))
            model.fit(fixed, epochs=1, verbose=0)
            return net.get_weights()

        a = one_step(tf.distribute.get_strategy())
        b = one_step(mirrored)
        print("DIFF", max(float(np.abs(p - q).max()) for p, q in zip(a, b)))
        init = tiny_net(4).get_weights()
        print("MOVED", max(float(np.abs(p - q).max()) for p, q in zip(a, init)))
"""

STEP_CHECKS = {"mirrored": MIRRORED, "sync_batchnorm": SYNC_BATCHNORM, "fixmatch": FIXMATCH}


@pytest.fixture(scope="module")
def step_checks() -> dict[str, str]:
    """``{name: what the check printed}`` of every STEP_CHECKS script, run in one process;
    a check that raised gives its traceback instead (its test fails with it)."""
    script = TWO_CPUS + "\n        import contextlib, io, traceback\n"
    script += "        mirrored = tf.distribute.MirroredStrategy(devices)\n"
    for name, body in STEP_CHECKS.items():
        script += f"\n        def check_{name}():\n"
        script += "            rng = np.random.default_rng(0)\n"
        script += textwrap.indent(textwrap.dedent(body), " " * 12)
        script += textwrap.indent(
            textwrap.dedent(
                f"""
                out = io.StringIO()
                try:
                    with contextlib.redirect_stdout(out):
                        check_{name}()
                except Exception:
                    out.write("FAILED\\n" + traceback.format_exc())
                print("=== {name}\\n" + out.getvalue() + "=== end")
                """
            ),
            " " * 8,
        )
    stdout = _python(script, timeout=400)
    found = dict(re.findall(r"=== (\w+)\n(.*?)=== end", stdout, flags=re.S))
    assert set(found) == set(STEP_CHECKS), stdout[-3000:]
    return found


def _step_check(step_checks: dict[str, str], name: str) -> str:
    out = step_checks[name]
    assert not out.startswith("FAILED"), out[-3000:]
    return out


def test_mirrored_step_equals_single_device_step(step_checks: dict[str, str]) -> None:
    out = _step_check(step_checks, "mirrored")
    diff, moved = map(float, re.search(r"DIFF (\S+) (\S+)", out).groups())
    assert diff < 1e-5 and moved > 0.0


def test_sync_batchnorm_mirrored_step_equals_single_device_step(
    step_checks: dict[str, str],
) -> None:
    out = _step_check(step_checks, "sync_batchnorm")
    assert float(re.search(r"SYNC (\S+)", out).group(1)) < 1e-5
    assert float(re.search(r"LOCAL (\S+)", out).group(1)) > 1e-3  # per-replica stats differ


def test_fixmatch_mirrored_step_equals_single_device_step(step_checks: dict[str, str]) -> None:
    out = _step_check(step_checks, "fixmatch")
    assert float(re.search(r"DIFF (\S+)", out).group(1)) < 1e-5
    assert float(re.search(r"MOVED (\S+)", out).group(1)) > 1e-4  # the step did change them


def _train(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    """``kerasdl train RECIPE --quiet ARGS`` in a fresh process."""
    command = [sys.executable, "-m", "kerasdl", "train", str(recipe), "--quiet", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def test_quickstart_style_recipe_under_mirrored_two_cpus(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, strategy="mirrored", logical_cpus=2)
    done = _train(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replica(s) on 1 worker(s); global batch 64 = 32 per replica" in done.stdout
    run_dir = next((tmp_path / "runs" / "dist").iterdir())
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["distribution"]["replicas"] == 2 and info["distribution"]["per_replica_batch"] == 32
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] >= 0.7


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config_env(index: int, hosts: list[str]) -> dict[str, str]:
    """A worker's environment for a cluster given as ``TF_CONFIG``."""
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    return {"TF_CONFIG": json.dumps(tf_config)}


def _start_cluster(
    recipe: Path,
    ports: list[int],
    cwd: Path,
    worker_env: Callable[[int, list[str]], dict[str, str]] = tf_config_env,
) -> list[subprocess.Popen]:
    """``kerasdl train RECIPE`` on one localhost worker per port; ``worker_env(index, hosts)``
    says how each learns the cluster (TF_CONFIG, or as in a Kubernetes Indexed Job)."""
    procs = []
    hosts = [f"localhost:{p}" for p in ports]
    for i in range(len(ports)):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "kerasdl", "train", str(recipe), "--quiet"],
                env={**ENV, **worker_env(i, hosts)},
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _fingerprint(output: str) -> float:
    """A worker's final weights fingerprint (it prints it; the chief keeps it in run_info)."""
    return float(re.search(r"final weights fingerprint (\S+)\)", output).group(1))


def _chief_fingerprint(runs: Path) -> float:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return json.loads((run_dir / "run_info.json").read_text())["final_weights_fingerprint"]


def test_two_worker_cluster_trains_identically_and_only_chief_writes(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, strategy="multi_worker")
    procs = _start_cluster(recipe, _free_ports(2), tmp_path)
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert _chief_fingerprint(tmp_path / "runs" / "dist") == _fingerprint(outs[1])
    runs = list((tmp_path / "runs" / "dist").iterdir())
    assert len(runs) == 1  # one run folder, written by the chief
    run_dir = runs[0]
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "best.keras").is_file()
    assert "the chief writes the run folder" in outs[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "runs"]


@pytest.mark.parametrize("mode", ["mirrored", "multi_worker"])
def test_kill_and_resume(tmp_path: Path, mode: str) -> None:
    recipe = _recipe(tmp_path, strategy=mode, **({"logical_cpus": 2} if mode == "mirrored" else {}))
    data = yaml.safe_load(recipe.read_text())
    data["training"]["epochs"] = 6
    recipe.write_text(yaml.safe_dump(data))
    ports = _free_ports(2)
    if mode == "mirrored":
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "kerasdl", "train", str(recipe), "--quiet"],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        ]
    else:
        procs = _start_cluster(recipe, ports, tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline:
        state = next((tmp_path / "runs" / "dist").glob("*/backup/checkpoint"), None)
        if state is not None and "ckpt-2" in state.read_text():
            break
        assert all(p.poll() is None for p in procs), "a process ended before the kill"
        time.sleep(0.2)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    run_dir = state.parent.parent
    assert not (run_dir / "metrics.json").exists()
    if mode == "mirrored":
        done = _train(recipe)
        outs = [done.stdout + done.stderr]
        assert done.returncode == 0, outs[0][-3000:]
    else:
        procs = _start_cluster(recipe, _free_ports(2), tmp_path)
        outs = [p.communicate(timeout=400)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
        assert _chief_fingerprint(tmp_path / "runs" / "dist") == _fingerprint(outs[1])
    assert all(f"Resuming {run_dir}" in out for out in outs)
    epochs = [
        int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]
    ]
    # one row per epoch, in order: no row lost to a kill between an epoch's row and its backup,
    # none doubled by the epoch the resumed run redid
    assert epochs == list(range(6))
    resume = json.loads((run_dir / "run_info.json").read_text())["resumes"][0]
    assert resume["epoch"] >= 2
    assert (run_dir / "metrics.json").is_file()


def test_mixed_precision_under_mirrored(tmp_path: Path) -> None:
    for policy in ("mixed_bfloat16", "mixed_float16"):
        recipe = _recipe(tmp_path, strategy="mirrored", logical_cpus=2)
        done = _train(
            recipe, "--fresh", "--set", f"training.precision={policy}", "--set", "training.epochs=2"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"precision {policy}" in done.stdout
        loss = float(re.search(r"loss (\S+)", done.stdout.split("Test metrics:")[1]).group(1))
        assert loss == loss and loss < 2.3  # finite and below chance level


def test_two_worker_cluster_trains_a_method(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, strategy="multi_worker")
    data = yaml.safe_load(recipe.read_text())
    data["method"] = {"name": "fixmatch", "labels_per_class": 5, "mu": 2}
    data["training"].update(epochs=1, batch_size=16)
    recipe.write_text(yaml.safe_dump(data))
    procs = _start_cluster(recipe, _free_ports(2), tmp_path)
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert _chief_fingerprint(tmp_path / "runs" / "dist") == _fingerprint(outs[1])
    run_dir = next((tmp_path / "runs" / "dist").iterdir())
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert "loss_u" in header and "mask_rate" in header
    assert "accuracy" in json.loads((run_dir / "metrics.json").read_text())
