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

# One fresh process loads both saved models (one TensorFlow start instead of two): each load
# starts with ``register_classes()``, so the second sees what a fresh process would.
SCRIPT = """
import sys, numpy as np, kerasdl
for name in sys.argv[2:]:
    model = kerasdl.load_model(f"{sys.argv[1]}/{name}.keras")
    x = np.load(f"{sys.argv[1]}/x.npy")
    out = model.predict(x, verbose=0)
    outs = out if isinstance(out, list) else [out]
    np.save(f"{sys.argv[1]}/{name}.npy", np.concatenate([np.ravel(o) for o in outs]))
    print(name, type(model).__name__)
"""
CASES = {"classifier": False, "features": True}  # name -> features_only


@pytest.fixture(scope="module")
def fresh_process_loads(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    """Both models saved here, their predictions here, and the fresh process's loads."""
    tmp = tmp_path_factory.mktemp("load")
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.save(tmp / "x.npy", x)
    wants = {}
    for name, features_only in CASES.items():
        model = kerasdl.create_model(
            "resnet18", num_classes=5, input_shape=(32, 32, 3), features_only=features_only
        )
        model.save(tmp / f"{name}.keras")
        want = model.predict(x, verbose=0)
        wants[name] = np.concatenate(
            [np.ravel(o) for o in (want if isinstance(want, list) else [want])]
        )
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp), *CASES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    classes = dict(line.split() for line in run.stdout.strip().splitlines()[-len(CASES) :])
    return tmp, wants, classes


@pytest.mark.parametrize("features_only", [False, True])
def test_a_saved_zoo_model_loads_in_a_fresh_process(
    fresh_process_loads, features_only: bool
) -> None:
    tmp, wants, classes = fresh_process_loads
    name = "features" if features_only else "classifier"
    assert classes[name] == ("FeatureModel" if features_only else "ResNet")
    np.testing.assert_allclose(np.load(tmp / f"{name}.npy"), wants[name], rtol=1e-5, atol=1e-6)


def test_a_missing_or_broken_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model file not found"):
        kerasdl.load_model(tmp_path / "nope.keras")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot load"):
        kerasdl.load_model(tmp_path / "broken.keras")
