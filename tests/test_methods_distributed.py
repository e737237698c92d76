"""Every method runs a few fit() steps under MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow initializes its devices, which the other
test modules of the same pytest process have long done: the check runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, sys.argv[1])
from test_methods_common import SELF, SEMI, tiny_backbone, tiny_data, tiny_params
from kerasdl.methods import build_method

GRAPH = ("fixmatch", "moco", "mae")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync}
for name in SEMI + SELF:
    with strategy.scope():
        method = build_method(name, tiny_backbone(name), 3, seed=0, **tiny_params(name))
        # graph mode (what fit does by default) for FixMatch, MoCo and MAE; the other four share
        # their code paths and run eagerly under the strategy to keep the test fast
        method.compile(keras.optimizers.Adam(1e-2), run_eagerly=name not in GRAPH)
    train, val = tiny_data(name)
    before = [w.copy() for w in method.backbone.get_weights()]
    # validation (test_step) under the strategy for the method with cross-replica state only
    hist = method.fit(train, validation_data=val if name == "moco" else None, epochs=1,
                      verbose=0).history
    changed = any(not np.allclose(a, b) for a, b in
                  zip(method.backbone.get_weights(), before))
    finite = all(bool(np.isfinite(v[-1])) for v in hist.values())
    out[name] = {"keys": sorted(hist), "changed": changed, "finite": finite}
    if name == "moco":
        out[name]["ptr"] = int(method.queue_ptr.numpy())
print("RESULT" + json.dumps(out))
"""


def test_methods_under_mirrored_strategy():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(HERE)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT") :])
    assert out.pop("replicas") == 2
    assert len(out) == 7
    for name, r in out.items():
        assert r["changed"] and r["finite"], name
        assert "loss" in r["keys"], name
    assert "val_contrastive_accuracy" in out["moco"]["keys"]
    # MoCo enqueued the keys of both replicas (global batch 4) for 2 steps: 8 mod 16
    assert out["moco"]["ptr"] == 8
