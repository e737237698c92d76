"""`import kerasdl` turns TensorFlow's oneDNN kernels on (x86-64), and grouped convolutions train
either way. Each case runs in a fresh process: TensorFlow reads TF_ENABLE_ONEDNN_OPTS once."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

X86 = platform.machine().lower() in ("x86_64", "amd64")

REPORT = """
import json
{first}
from kerasdl import onednn
on, why = onednn.status()
print(json.dumps({{"on": on, "why": why}}))
"""


def _run(code: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _status(first: str, env_value: str | None) -> dict:
    out = _run(REPORT.format(first=first), env_value).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not X86, reason="kerasdl asks for oneDNN on x86-64 only")
def test_import_kerasdl_turns_onednn_on():
    got = _status("import kerasdl", None)
    assert got == {"on": True, "why": "kerasdl's default on x86-64"}


def test_the_users_setting_wins():
    got = _status("import kerasdl", "0")
    assert got == {"on": False, "why": "TF_ENABLE_ONEDNN_OPTS=0"}


def test_tensorflow_loaded_first_keeps_its_default_and_says_so():
    got = _status("import tensorflow\nimport kerasdl", None)
    assert "loaded before kerasdl" in got["why"]


GROUPED = """
import json
import numpy as np
import tensorflow as tf
from kerasdl import onednn
from kerasdl.layers.torch_compat import GroupedConv2D

conv = GroupedConv2D(8, 3, padding="same", groups=4)
x = tf.constant(np.random.default_rng(0).normal(size=(2, 9, 9, 8)), tf.float32)
conv.build(x.shape)

@tf.function
def step(x):
    with tf.GradientTape() as tape:
        y = conv(x)
        loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, [conv.kernel, conv.bias])

y, (dk, db) = step(x)
# the same function as 4 separate convolutions of 2 channels each
with tf.GradientTape() as tape:
    tape.watch(conv.kernel.value)
    parts = [
        tf.nn.conv2d(xs, ks, 1, "SAME")
        for xs, ks in zip(tf.split(x, 4, -1), tf.split(conv.kernel.value, 4, -1))
    ]
    want = tf.concat(parts, -1) + conv.bias.value
    loss = tf.reduce_sum(want * want)
want_dk = tape.gradient(loss, conv.kernel.value)
print(json.dumps({
    "onednn": onednn.enabled(),
    "y": float(np.abs(y - want).max()),
    "dk": float(np.abs(dk - want_dk).max()),
}))
"""


@pytest.mark.parametrize("setting", ["0", "1"])
def test_grouped_convolution_trains_with_and_without_onednn(setting):
    """Without oneDNN TensorFlow has no CPU kernel for the grouped filter gradient: the layer
    then takes Keras's own path instead of failing (ResNeXt trains on every CPU)."""
    out = json.loads(_run(GROUPED, setting).stdout.strip().splitlines()[-1])
    if X86:
        assert out["onednn"] is (setting == "1")
    assert out["y"] < 1e-4 and out["dk"] < 1e-3


RUN_MAIN = "runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.mark.skipif(not X86, reason="kerasdl asks for oneDNN on x86-64 only")
def test_onednn_kernels_agree_with_eigens_on_this_cpu(tmp_path):
    """kerasdl turns oneDNN on where TensorFlow would not: on the CPU the tests run on, its
    values and gradients (convolutions, pooling, batch norm, matmul, ...) equal Eigen's."""
    script = os.path.join(os.path.dirname(__file__), "onednn_ops.py")
    runs = {}
    for value in ("0", "1"):
        path = tmp_path / f"ops{value}.npz"
        argv = [script, str(path)]
        _run(f"import runpy, sys\nsys.argv = {argv!r}\n" + RUN_MAIN, value)
        runs[value] = np.load(path)
    eigen, onednn = runs["0"], runs["1"]
    assert eigen.files == onednn.files and len(eigen.files) > 300
    differ = {}
    for key in eigen.files:
        a, b = eigen[key], onednn[key]
        scale = float(np.abs(a).max()) + 1e-6
        if a.shape != b.shape or float(np.abs(a - b).max()) > 1e-4 * scale:
            differ[key] = float(np.abs(a - b).max()) / scale if a.shape == b.shape else "shape"
    assert not differ, differ


def test_after_import_runs_once_for_its_module_and_restores_the_loader(tmp_path, monkeypatch):
    """kerasdl.onednn installs the convolution wrappers through this hook
    (kerasdl/layers/exact_conv.py); it must fire once, for its module only."""
    from kerasdl.onednn import _after_import

    package = tmp_path / "hooked_pkg"
    package.mkdir()
    for name in ("__init__", "target", "other"):
        (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    _after_import("hooked_pkg.target", seen.append)
    _after_import("hooked_pkg.target", seen.append)  # registered once
    import hooked_pkg.other  # noqa: F401
    import hooked_pkg.target

    assert [m.NAME for m in seen] == ["target"]
    assert "exec_module" not in vars(hooked_pkg.target.__spec__.loader)
    _after_import("hooked_pkg.target", seen.append)  # already imported: at once
    assert [m.NAME for m in seen] == ["target", "target"]
    for name in ("hooked_pkg", "hooked_pkg.target", "hooked_pkg.other"):
        sys.modules.pop(name, None)
