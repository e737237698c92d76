"""McCulloch-Pitts gates, the perceptron rule (AND/OR converge, XOR stays <= 75%), the MLP on XOR,
the NumPy backprop MLP against Keras autodiff, DropConnect, and the XOR app's smoke mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl import create_model
from kerasdl.layers.dropconnect import DropConnectDense, DropPath
from kerasdl.models.mlp import MLP, NumpyMLP
from kerasdl.models.perceptron import McCullochPittsNeuron, Perceptron, logic_gate

X2 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
TRUTH = {
    "and": np.array([0, 0, 0, 1], "float32"),
    "or": np.array([0, 1, 1, 1], "float32"),
    "xor": np.array([0, 1, 1, 0], "float32"),
}
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("gate", ["and", "or"])
def test_mcculloch_pitts_two_input_gates(gate):
    out = keras.ops.convert_to_numpy(logic_gate(gate)(X2))[:, 0]
    np.testing.assert_array_equal(out, TRUTH[gate])


def test_mcculloch_pitts_not_and_inhibition():
    out = keras.ops.convert_to_numpy(logic_gate("not")(np.array([[0.0], [1.0]], "float32")))
    np.testing.assert_array_equal(out[:, 0], [1.0, 0.0])
    # Absolute inhibition: input 2 vetoes firing whatever the excitatory sum.
    neuron = McCullochPittsNeuron([1, 1, 5], threshold=1, inhibitory=[2])
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(neuron(x))[:, 0], [1, 0, 0])
    assert neuron.trainable_weights == []
    clone = McCullochPittsNeuron.from_config(neuron.get_config())
    np.testing.assert_array_equal(clone(x), neuron(x))


def _fit_perceptron(y, epochs):
    keras.utils.set_random_seed(0)
    model = Perceptron(num_classes=1, input_shape=(2,))
    model.compile()
    hist = model.fit(X2, y, batch_size=1, epochs=epochs, shuffle=False, verbose=0)
    return model, hist.history["accuracy"]


def test_perceptron_rule_is_one_exact_update():
    model = Perceptron(num_classes=1, input_shape=(2,), learning_rate=0.5)
    model.compile()
    head = model.get_layer("head")
    head.set_weights([np.array([[1.0], [-1.0]], "float32"), np.array([0.0], "float32")])
    # x = (0, 1): score -1 -> y_hat = 0; y = 1 -> w += 0.5 * (1 - 0) * x, b += 0.5.
    model.fit(X2[1:2], np.array([1.0], "float32"), batch_size=1, epochs=1, verbose=0)
    w, b = head.get_weights()
    np.testing.assert_allclose(w[:, 0], [1.0, -0.5])
    np.testing.assert_allclose(b, [0.5])
    # A correct prediction changes nothing.
    model.fit(X2[2:3], np.array([1.0], "float32"), batch_size=1, epochs=1, verbose=0)
    np.testing.assert_allclose(head.get_weights()[0][:, 0], [1.0, -0.5])


@pytest.mark.parametrize("gate", ["and", "or"])
def test_perceptron_learns_and_or(gate):
    model, acc = _fit_perceptron(TRUTH[gate], epochs=10)
    assert model.evaluate(X2, TRUTH[gate], verbose=0, return_dict=True)["accuracy"] == 1.0
    pred = keras.ops.convert_to_numpy(model.predict_labels(model(X2)))[:, 0]
    np.testing.assert_array_equal(pred, TRUTH[gate])


def test_perceptron_cannot_learn_xor():
    model, acc = _fit_perceptron(TRUTH["xor"], epochs=12)
    assert max(acc) <= 0.75
    assert model.evaluate(X2, TRUTH["xor"], verbose=0, return_dict=True)["accuracy"] <= 0.75


def test_multiclass_perceptron_separable_digits():
    rng = np.random.default_rng(0)
    centers = np.eye(3, 5, dtype="float32") * 4.0
    y = rng.integers(0, 3, 60)
    x = centers[y] + rng.normal(scale=0.3, size=(60, 5)).astype("float32")
    model = create_model("perceptron", num_classes=3, input_shape=(5,))
    model.compile()
    model.fit(x, keras.ops.one_hot(y, 3), batch_size=1, epochs=5, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] == 1.0


def test_mlp_solves_xor_with_fit():
    keras.utils.set_random_seed(1)
    model = create_model("mlp", num_classes=1, input_shape=(2,), hidden_units=[8])
    assert model.activation == "sigmoid"
    model.compile(keras.optimizers.Adam(0.1), keras.losses.BinaryCrossentropy(from_logits=True))
    # 100 copies of the 4 points per epoch: 400 full-batch steps in 4 epochs.
    hist = model.fit(
        np.tile(X2, (100, 1)), np.tile(TRUTH["xor"], 100), batch_size=4, epochs=4, verbose=0
    )
    assert hist.history["loss"][-1] < 0.5 * np.log(2.0)
    pred = (keras.ops.convert_to_numpy(model(X2))[:, 0] > 0).astype("float32")
    np.testing.assert_array_equal(pred, TRUTH["xor"])


@pytest.fixture
def float64():
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(old)
    keras.config.set_dtype_policy(old_policy)


@pytest.mark.parametrize("activation,num_classes", [("sigmoid", 1), ("tanh", 4), ("relu", 3)])
def test_numpy_backprop_equals_keras_autodiff(float64, activation, num_classes):
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    model = MLP(num_classes, input_shape=(3, 2), hidden_units=[5, 4], activation=activation)
    x = rng.normal(size=(7, 3, 2))
    y = rng.integers(0, max(num_classes, 2), 7)
    if num_classes == 1:
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        target = y.reshape(-1, 1).astype("float64")
    else:
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
        target = np.eye(num_classes)[y]
    with tf.GradientTape() as tape:
        logits = model(x)
        loss = loss_fn(target, logits)
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    assert all(g.dtype == np.float64 for g in grads)
    net = NumpyMLP.from_keras(model)
    np.testing.assert_allclose(net.forward(x), logits.numpy(), rtol=1e-12)
    np_loss, dws, dbs = net.loss_and_grads(x, y if num_classes > 1 else target)
    assert np_loss == pytest.approx(float(loss), rel=1e-10)
    ours = [g for pair in zip(dws, dbs, strict=True) for g in pair]
    for mine, ref in zip(ours, grads, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-8, atol=1e-12)


def test_numpy_mlp_learns_xor():
    net = NumpyMLP([2, 4, 1], activation="sigmoid", seed=0)
    first = net.sgd_step(X2.astype("float64"), TRUTH["xor"], lr=2.0)
    for _ in range(3000):
        last = net.sgd_step(X2.astype("float64"), TRUTH["xor"], lr=2.0)
    assert last < 0.1 * first
    np.testing.assert_array_equal((net.forward(X2)[:, 0] > 0).astype("float32"), TRUTH["xor"])


def test_dropconnect_masks_weights_not_activations():
    keras.utils.set_random_seed(3)
    layer = DropConnectDense(200, rate=0.5, seed=1)
    eye = np.eye(16, dtype="float32")
    inference = keras.ops.convert_to_numpy(layer(eye))
    kernel, bias = [keras.ops.convert_to_numpy(v) for v in layer.weights]
    np.testing.assert_allclose(inference, kernel + bias, rtol=1e-6)
    # Feeding the identity shows the effective weights: each is 0 or w / (1 - rate).
    layer.use_bias = False
    eff = keras.ops.convert_to_numpy(layer(eye, training=True))
    dropped = np.isclose(eff, 0.0)
    np.testing.assert_allclose(eff[~dropped], 2.0 * kernel[~dropped], rtol=1e-6)
    assert 0.45 < dropped.mean() < 0.55
    # Unlike dropout, zeros fall on connections: a row of one input is not all-or-nothing.
    assert 0 < dropped[0].sum() < 200
    # Fresh mask per call; the mean over calls approaches the weights.
    again = keras.ops.convert_to_numpy(layer(eye, training=True))
    assert not np.array_equal(np.isclose(again, 0.0), dropped)
    clone = DropConnectDense.from_config(layer.get_config())
    assert clone.rate == 0.5 and clone.units == 200


def test_drop_path_drops_whole_samples():
    layer = DropPath(0.5, seed=0)
    x = np.ones((400, 3, 2), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(400, -1)
    assert np.all((per_sample == 0).all(1) | (per_sample == 2.0).all(1))
    assert 0.4 < (per_sample[:, 0] == 0).mean() < 0.6
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_xor_app_smoke():
    result = subprocess.run(
        [sys.executable, str(ROOT / "apps" / "xor_perceptron.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "AND  truth table ok" in out and "XOR perceptron accuracy" in out
    assert "max |numpy - autodiff| relative" in out
