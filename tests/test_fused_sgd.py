"""``FusedSGD``: Keras's SGD update (plain, momentum, Nesterov) in one kernel, bit for bit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdl.training.fused_sgd import FusedSGD


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_fused_sgd_equals_keras_sgd(momentum: float, nesterov: bool) -> None:
    runs = []
    for cls in (keras.optimizers.SGD, FusedSGD):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
        model.compile(cls(0.05, momentum=momentum, nesterov=nesterov), "mse")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((32, 6)).astype("float32")
        y = rng.standard_normal((32, 3)).astype("float32")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        runs.append([v.numpy() for v in model.weights + model.optimizer.variables])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_recipe_optimizers_are_fused() -> None:
    from kerasdl.config import OptimizerConfig
    from kerasdl.training.optimizers import build_optimizer

    for name in ("sgd", "momentum", "nesterov"):
        opt = build_optimizer(OptimizerConfig(name=name), 0.1)
        assert isinstance(opt, FusedSGD)
        assert keras.optimizers.deserialize(keras.optimizers.serialize(opt)).__class__ is FusedSGD
