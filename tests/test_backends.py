"""The zoo on every Keras backend: a small model of each family, its ``.weights.h5``, inputs and
logits saved from the TensorFlow backend (this process), loaded under ``KERAS_BACKEND=torch`` and
``KERAS_BACKEND=jax`` (a subprocess each), logits compared (atol and rtol 1e-4).

The cases are :data:`kerasdl.export.portability.CASES` (weights with randomised batch-norm
statistics and no all-zero or all-one tensor). A backend that is not installed is skipped (the
``torch`` extra; ``jax[cpu]``). By default each backend runs a few cheap cases that between them
cover the block kinds (dense; conv + batch norm + residual; MBConv with squeeze-excite and SiLU;
attention with LayerNorm and GELU); every family runs under ``-m slow`` (building all of them,
GoogLeNet and the JAX compilations especially, takes minutes on a 2-core CPU).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kerasdl.export.portability import CASES, run_backend, save_reference

QUICK = {
    "torch": ["mlp", "simple_cnn", "resnet20", "efficientnet_b0", "vit_ti_16"],
    "jax": ["mlp", "simple_cnn"],
}


class References:
    """The TensorFlow references, saved on demand into one folder (each case once)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.saved: set[str] = set()

    def __call__(self, names: list[str]) -> Path:
        missing = [n for n in names if n not in self.saved]
        if missing:
            save_reference(self.work, missing)
            self.saved.update(missing)
        return self.work


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(tmp_path_factory.mktemp("backends"))


def _check(backend: str, work: Path, names: list[str]) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    results = run_backend(backend, work, names)
    assert sorted(results) == sorted(names)
    failed = {n: r for n, r in results.items() if not r["ok"]}
    assert not failed, f"{backend} differs from tensorflow: {failed}"
    assert all(r["rel"] < 1e-4 for r in results.values())


def test_references_are_telling(references: References) -> None:
    """The saved logits depend on the weights (a failed load would be noticed): a zero-weight
    model, or the fresh model without telling weights, gives other logits."""
    import keras
    import numpy as np

    from kerasdl.export.portability import build_case

    work = references(["resnet20", "efficientnet_b0"])
    for name in ("resnet20", "efficientnet_b0"):
        want = np.load(work / f"{name}.y.npy")
        x = np.load(work / f"{name}.x.npy")
        plain = build_case(name, telling=False)
        got = keras.ops.convert_to_numpy(plain(x, training=False))
        assert np.max(np.abs(got - want)) > 1e-2
        assert np.std(want) > 1e-3  # logits differ between images and classes


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_backend_gives_tensorflow_logits(backend: str, references: References) -> None:
    _check(backend, references(QUICK[backend]), QUICK[backend])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_backend_gives_tensorflow_logits_every_family(backend: str, references: References) -> None:
    names = [n for n in CASES if n not in QUICK[backend]]
    _check(backend, references(names), names)
