"""Named weight initialization: empirical variance and bounds against He / Glorot formulas."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdl.errors import UserError
from kerasdl.training.initializers import apply_initializer, get_initializer, kernel_variables


def _model() -> keras.Model:
    inputs = keras.Input((8, 8, 32))
    x = keras.layers.Conv2D(64, 3, name="conv")(inputs)  # fan_in 288, fan_out 576
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)  # kernel (3, 3, 64, 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(512, name="fc")(x)  # fan_in 64, fan_out 512
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    rf = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * rf, shape[-1] * rf


@pytest.mark.parametrize(
    "name,mode",
    [
        ("he_normal", "fan_in"),
        ("he_normal", "fan_out"),
        ("kaiming_uniform", "fan_in"),
        ("he_uniform", "fan_out"),
        ("xavier_normal", "fan_in"),
        ("glorot_uniform", "fan_out"),
    ],
)
def test_empirical_variance_matches_formula(name: str, mode: str) -> None:
    model = _model()
    biases = {w.path: np.array(w) for w in model.weights if w.path.endswith("bias")}
    n = apply_initializer(model, name, mode, seed=0)
    assert n == 4
    he = name.startswith(("he", "kaiming"))
    for w in kernel_variables(model):
        v = np.asarray(w)
        if v.size < 5000:
            continue  # too few draws for a tight variance estimate (depthwise, head)
        fan_in, fan_out = _fans(v.shape)
        if he:  # He et al. 2015: Var = 2 / fan (eq. 10 forward, eq. 14 backward)
            var = 2.0 / (fan_in if mode == "fan_in" else fan_out)
        else:  # Glorot & Bengio 2010, eq. 12: Var = 2 / (fan_in + fan_out)
            var = 2.0 / (fan_in + fan_out)
        assert abs(v.mean()) < 0.05 * np.sqrt(var)
        assert v.var() == pytest.approx(var, rel=0.06), w.path
        if name.endswith("uniform"):
            bound = np.sqrt(3.0 * var)  # U(-a, a) has variance a^2 / 3
            assert np.abs(v).max() <= bound * (1 + 1e-6)
            assert np.abs(v).max() > 0.99 * bound
        else:  # Keras's truncated normal: cut at 2 standard deviations of the untruncated one
            assert np.abs(v).max() <= 2.0 * np.sqrt(var) / 0.87962566 * (1 + 1e-6)
    for w in model.weights:
        if w.path in biases:
            np.testing.assert_array_equal(np.array(w), biases[w.path])


def test_kernels_of_different_layers_get_different_draws_and_seed_repeats() -> None:
    a, b = _model(), _model()
    apply_initializer(a, "he_uniform", seed=3)
    apply_initializer(b, "he_uniform", seed=3)
    for wa, wb in zip(kernel_variables(a), kernel_variables(b), strict=True):
        np.testing.assert_array_equal(np.array(wa), np.array(wb))
    # Two same-shaped kernels in one model are not the same draw.
    m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16), keras.layers.Dense(16)])
    apply_initializer(m, "glorot_normal", seed=0)
    k1, k2 = (np.array(w) for w in kernel_variables(m))
    assert not np.allclose(k1, k2)


def test_registry_model_and_errors() -> None:
    from kerasdl.registry import create_model

    model = create_model(
        "simple_cnn", num_classes=10, input_shape=(8, 8, 1), filters=[8, 16], convs_per_stage=1
    )
    gammas = [np.array(w) for w in model.weights if w.path.endswith("gamma")]
    assert apply_initializer(model, "he_normal", "fan_out", seed=1) == 3  # 2 convs + head
    for g, w in zip(gammas, [w for w in model.weights if w.path.endswith("gamma")], strict=True):
        np.testing.assert_array_equal(g, np.array(w))
    with pytest.raises(UserError, match="unknown initializer"):
        get_initializer("lecun_sparkly")
    with pytest.raises(UserError, match="fan_in"):
        get_initializer("he_normal", "fan_sideways")
