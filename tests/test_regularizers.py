"""training.l1 / training.l2: the kernel penalty's value and its effect on every training path.

The value is checked against ``l1 * sum|w| + l2 * sum w^2`` over the kernels (NumPy, float64);
the effect of one step against plain SGD on ``loss + penalty``: two twins with the same weights and
data, one penalised, must differ after one SGD step by exactly ``-lr * (l1 sign(w) + 2 l2 w)`` on
every kernel and not at all elsewhere -- under Keras ``fit``, the custom distributed loop, a
semi-supervised method and the DARTS search.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_recipe

import kerasdl
from kerasdl.errors import UserError
from kerasdl.training.regularizers import (
    KernelPenalty,
    add_kernel_penalties,
    is_kernel,
    kernel_penalty,
    kernel_variables,
)

LR = 0.1
KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
)


def _reference(variables, l1: float, l2: float) -> float:
    ws = [np.asarray(v, np.float64) for v in variables]
    return sum(l1 * np.abs(w).sum() + l2 * np.square(w).sum() for w in ws)


def _layer_kernels(model: keras.Model) -> set[int]:
    """Kernels found by layer type (independently of the variable-name rule)."""
    return {
        id(layer.kernel)
        for layer in model._flatten_layers()
        if isinstance(layer, KERNEL_LAYERS) and layer.trainable
    }


@pytest.mark.parametrize(
    ("name", "kwargs", "excluded"),
    [
        ("resnet20", {"input_shape": [16, 16, 3]}, {"gamma", "beta"}),
        ("efficientnet_b0", {"input_shape": [32, 32, 3]}, {"gamma", "beta", "bias"}),
        ("vit_ti_16", {"input_shape": [32, 32, 3]}, {"pos_embedding", "class_token", "bias"}),
    ],
)
def test_penalty_equals_formula_over_the_kernels(name: str, kwargs: dict, excluded: set) -> None:
    model = kerasdl.create_model(name, num_classes=10, **kwargs)
    l1, l2 = 1e-4, 3e-3
    add_kernel_penalties(model, l1, l2)
    kernels = kernel_variables(model)
    assert {id(k) for k in kernels} == _layer_kernels(model)
    penalised = {w.name for w in model.trainable_weights if w.regularizer is not None}
    assert penalised == {"kernel"} and not excluded & penalised
    if name == "efficientnet_b0":  # depthwise kernels are kernels
        assert any(isinstance(x, keras.layers.DepthwiseConv2D) for x in model._flatten_layers())
    expected = _reference(kernels, l1, l2)
    assert float(kernel_penalty(model)) == pytest.approx(expected, rel=1e-5)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)  # what fit adds
    assert len(model.losses) == len(kernels)


def _small_cnn(**kw) -> keras.Model:
    return kerasdl.create_model(
        "simple_cnn",
        num_classes=3,
        input_shape=[8, 8, 1],
        filters=[4, 8],
        convs_per_stage=1,
        dropout=0.0,
        **kw,
    )


@pytest.mark.parametrize(("l1", "l2"), [(0.01, 0.0), (0.0, 0.02), (0.01, 0.02)])
def test_l1_l2_and_elastic_net_values_replace_and_remove(l1: float, l2: float) -> None:
    model = _small_cnn()
    add_kernel_penalties(model, l1, l2)
    add_kernel_penalties(model, l1, l2)  # again: replaced, not doubled
    ref = _reference(kernel_variables(model), l1, l2)
    assert float(kernel_penalty(model)) == pytest.approx(ref, rel=1e-5)
    add_kernel_penalties(model, 0.0, 0.0)
    assert model.losses == [] and float(kernel_penalty(model)) == 0.0


def test_frozen_kernels_are_not_penalised_until_unfrozen() -> None:
    model = _small_cnn()
    add_kernel_penalties(model, 0.0, 0.01)
    full = float(kernel_penalty(model))
    head = model.get_layer("head")
    head.trainable = False
    assert float(kernel_penalty(model)) == pytest.approx(
        full - _reference([head.kernel], 0.0, 0.01), rel=1e-5
    )
    head.trainable = True
    assert float(kernel_penalty(model)) == pytest.approx(full, rel=1e-6)


def test_penalty_is_float32_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _small_cnn()
        add_kernel_penalties(model, 1e-3, 1e-2)
        value = kernel_penalty(model)
        dtypes = {keras.backend.standardize_dtype(x.dtype) for x in [*model.losses, value]}
        assert dtypes == {"float32"}
        # bf16 has 8 bits of mantissa: a penalty computed in bf16 would be ~1e-3 off
        ref = _reference(kernel_variables(model), 1e-3, 1e-2)
        assert float(value) == pytest.approx(ref, rel=1e-6)
        model.compile(optimizer=keras.optimizers.SGD(LR), loss=_loss(), jit_compile=False)
        x, y = _batch()
        assert np.isfinite(model.train_on_batch(x, y))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_perceptron_rule_refuses_a_penalty() -> None:
    model = kerasdl.create_model("perceptron", num_classes=1, input_shape=[4])
    with pytest.raises(UserError, match="own update rule"):
        add_kernel_penalties(model, 0.0, 1e-3)


def test_other_regularizer_is_not_silently_replaced() -> None:
    model = _small_cnn()
    model.get_layer("head").kernel.regularizer = keras.regularizers.L2(1.0)
    with pytest.raises(UserError, match="already has a regularizer"):
        add_kernel_penalties(model, 0.0, 1e-3)


# --- one SGD step with and without the penalty -------------------------------------------------


def _loss() -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(from_logits=True)


def _batch(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return x, y


def _twins(build) -> tuple[keras.Model, keras.Model]:
    a, b = build(), build()
    b.set_weights(a.get_weights())
    return a, b


def _assert_one_sgd_step_apart(variables_a, variables_b, before, l1: float, l2: float) -> None:
    """``a - b == -lr * (l1 sign(w0) + 2 l2 w0)`` on the kernels, ``0`` elsewhere."""
    kernels = 0
    for va, vb, w0 in zip(variables_a, variables_b, before, strict=True):
        diff = np.asarray(va) - np.asarray(vb)
        if is_kernel(va):
            kernels += 1
            expected = -LR * (l1 * np.sign(w0) + 2.0 * l2 * w0)
            assert np.abs(expected).max() > 1e-4  # the penalty's effect is visible
        else:
            expected = np.zeros_like(w0)
        np.testing.assert_allclose(diff, expected, atol=2e-6, err_msg=va.path)
    assert kernels >= 3


def _fit_one_step(model, data, loop: str) -> list[float]:
    ds = tf.data.Dataset.from_tensors(data)
    if loop == "fit":
        history = model.fit(ds, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
        return history.history
    from kerasdl.training.custom_loop import fit_distributed

    logs = fit_distributed(
        model, tf.distribute.get_strategy(), ds, epochs=1, steps_per_epoch=1, verbose=False
    )
    return {k: [v] for k, v in logs[0].items()}


@pytest.mark.parametrize("loop", ["fit", "custom_loop"])
def test_supervised_step_is_sgd_on_loss_plus_penalty(loop: str) -> None:
    l2 = 0.02
    a, b = _twins(_small_cnn)
    add_kernel_penalties(a, 0.0, l2)
    penalty0 = float(kernel_penalty(a))
    before = [np.asarray(w) for w in a.trainable_weights]
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.SGD(LR), loss=_loss(), jit_compile=False)
    logs = [_fit_one_step(m, _batch(), loop) for m in (a, b)]
    _assert_one_sgd_step_apart(a.trainable_weights, b.trainable_weights, before, 0.0, l2)
    # the logged loss is Keras's total: data loss + penalty
    assert logs[0]["loss"][0] - logs[1]["loss"][0] == pytest.approx(penalty0, rel=1e-4)


@pytest.mark.parametrize(("method", "loop"), [("fixmatch", "fit"), ("pi_model", "custom_loop")])
def test_method_step_includes_the_backbone_penalty(method: str, loop: str) -> None:
    from kerasdl.methods import build_method

    l1, l2 = 0.005, 0.02
    nets = _twins(_small_cnn)
    add_kernel_penalties(nets[0], l1, l2)  # as the runner does, before wrapping in the method
    before = [np.asarray(w) for w in nets[0].trainable_weights]
    params = {"threshold": 0.0, "mu": 1} if method == "fixmatch" else {}
    methods = [build_method(method, net, 3, seed=0, **params) for net in nets]
    x, y = _batch()
    u1, u2 = _batch(seed=1)[0], _batch(seed=2)[0]
    for m in methods:
        m.compile(optimizer=keras.optimizers.SGD(LR), jit_compile=False)
        _fit_one_step(m, ((x, y), (u1, u2)), loop)
    _assert_one_sgd_step_apart(nets[0].trainable_weights, nets[1].trainable_weights, before, l1, l2)


def test_darts_search_gradients_include_the_network_penalty() -> None:
    # The function behind both DARTS updates (weights and alphas, first and second order), run
    # eagerly on one tiny network without and with the penalty: a traced search step costs ~1 min.
    from kerasdl.nas.search import DartsSearch
    from kerasdl.nas.search_model import SearchNetwork

    l1, l2 = 0.005, 0.02
    net = SearchNetwork(3, (8, 8, 1), init_channels=2, layers=3, steps=1, multiplier=1, seed=0)
    search = DartsSearch(net, weight_decay=0.0)
    x, y = _batch()
    loss0, _, grads0 = search._loss_and_gradients(x, y)
    add_kernel_penalties(net, l1, l2)
    assert not any(a.regularizer for a in net.arch_variables)  # alphas are not kernels
    penalty = float(kernel_penalty(net))
    loss1, _, grads1 = search._loss_and_gradients(x, y)
    assert float(loss1) - float(loss0) == pytest.approx(penalty, rel=1e-5)
    kernels = 0
    for v, g0, g1 in zip(net.trainable_variables, grads0, grads1, strict=True):
        w = np.asarray(v)
        expected = l1 * np.sign(w) + 2.0 * l2 * w if is_kernel(v) else np.zeros_like(w)
        kernels += is_kernel(v)
        np.testing.assert_allclose(np.asarray(g1) - np.asarray(g0), expected, atol=1e-6)
    assert kernels >= 3


# --- saving and a recipe run -------------------------------------------------------------------


def test_keras_round_trip_keeps_weights_not_the_penalty(tmp_path) -> None:
    model = _small_cnn()
    add_kernel_penalties(model, 1e-3, 1e-2)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=_loss(), jit_compile=False)
    model.train_on_batch(*_batch())
    config = model.get_config()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for w, v in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(v))
    assert loaded.get_config() == config  # the penalty is not part of the architecture
    assert loaded.losses == [] and all(w.regularizer is None for w in loaded.weights)
    x = _batch()[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(model.get_layer("head").kernel.regularizer, KernelPenalty)  # untouched
    penalty = float(kernel_penalty(model))
    # same weights and batch: the loaded model's loss lacks exactly the penalty
    with_penalty = model.evaluate(*_batch(), verbose=0)
    without = loaded.evaluate(*_batch(), verbose=0)
    assert with_penalty - without == pytest.approx(penalty, rel=1e-4)
    add_kernel_penalties(loaded, 1e-3, 1e-2)  # re-applied: the same penalty again
    assert float(kernel_penalty(loaded)) == pytest.approx(penalty, rel=1e-6)


def test_recipe_with_elastic_net_finishes(tmp_path) -> None:
    from kerasdl.config import load_recipe
    from kerasdl.training.runner import train

    recipe = write_recipe(
        tmp_path / "r.yaml",
        tmp_path / "runs",
        training={"epochs": 1, "l1": 1e-5, "l2": 5e-4},
        model={"filters": [8, 16]},
    )
    result = train(load_recipe(recipe), verbose=0)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert (result.run_dir / "best.keras").is_file()
