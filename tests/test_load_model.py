"""``kerasdl.load_model``: a ``.keras`` file kerasdl wrote loads in a fresh process after only
``import kerasdl`` (``keras.saving.load_model`` alone cannot resolve kerasdl's classes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kerasdl
from kerasdl.errors import UserError

SCRIPT = """
import sys, numpy as np, kerasdl
model = kerasdl.load_model(sys.argv[1])
x = np.load(sys.argv[2])
out = model.predict(x, verbose=0)
outs = out if isinstance(out, list) else [out]
np.save(sys.argv[3], np.concatenate([np.ravel(o) for o in outs]))
print(type(model).__name__)
"""


@pytest.mark.parametrize("features_only", [False, True])
def test_a_saved_zoo_model_loads_in_a_fresh_process(tmp_path: Path, features_only: bool) -> None:
    model = kerasdl.create_model(
        "resnet18", num_classes=5, input_shape=(32, 32, 3), features_only=features_only
    )
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    want = model.predict(x, verbose=0)
    want = np.concatenate([np.ravel(o) for o in (want if isinstance(want, list) else [want])])
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, *(str(tmp_path / f) for f in ("m.keras", "x.npy", "y.npy"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == ("FeatureModel" if features_only else "ResNet")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-6)


def test_a_missing_or_broken_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model file not found"):
        kerasdl.load_model(tmp_path / "nope.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot load"):
        kerasdl.load_model(tmp_path / "broken.keras")
