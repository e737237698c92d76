"""kerasdl.layers.pooling: Keras's max pooling, with Eigen's kernel to infer and oneDNN's to
train; the same values and gradients either way."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import keras_file_round_trip

from kerasdl import create_model
from kerasdl.layers.pooling import MaxPooling2D, max_pool, standard_max_pool
from kerasdl.layers.torch_compat import PaddedMaxPooling2D


def _pool_ops(fn, shape) -> list[str]:
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(shape)).graph
    return sorted(op.type for op in graph.get_operations() if "Pool" in op.type)


def _value_and_grad(layer, x, training):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
        loss = tf.reduce_sum(y * y)
    return y.numpy(), tape.gradient(loss, xt).numpy()


@pytest.mark.parametrize(
    "pool_size,strides,padding", [(3, 2, "valid"), (3, 1, "same"), (2, 2, "valid"), (3, 2, "same")]
)
@pytest.mark.parametrize("training", [None, False, True])
def test_same_values_and_gradients_as_keras(pool_size, strides, padding, training):
    x = np.random.default_rng(pool_size + strides).normal(size=(2, 9, 10, 5)).astype("float32")
    ours = MaxPooling2D(pool_size, strides=strides, padding=padding)
    ref = keras.layers.MaxPooling2D(pool_size, strides=strides, padding=padding)
    for got, want in zip(
        _value_and_grad(ours, x, training), _value_and_grad(ref, x, None), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert ours.compute_output_shape(x.shape) == ref.compute_output_shape(x.shape)


def test_inference_runs_maxpoolv2_and_training_maxpool():
    """MaxPoolV2 is not rewritten to oneDNN's kernel; MaxPool is (with oneDNN on)."""
    pool = MaxPooling2D(3, strides=2)
    shape = (2, 9, 9, 4)
    assert _pool_ops(lambda x: pool(x, training=False), shape) == ["MaxPoolV2"]
    assert _pool_ops(lambda x: pool(x), shape) == ["MaxPoolV2"]
    assert _pool_ops(lambda x: pool(x, training=True), shape) == ["MaxPool"]
    assert _pool_ops(lambda x: max_pool(x, (3, 3), (2, 2), training=True), shape) == ["MaxPool"]


def test_config_and_keras_file_round_trip(tmp_path):
    pool = MaxPooling2D(3, strides=2, padding="same", name="p")
    model, again = keras_file_round_trip(pool, (8, 8, 3), tmp_path, keras.layers.MaxPooling2D)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(again(x), model(x))


@pytest.mark.parametrize("padding,ceil_mode", [(1, False), (0, True)])
def test_padded_max_pooling_takes_the_phase_too(padding, ceil_mode):
    pool = PaddedMaxPooling2D(3, strides=2, padding=padding, ceil_mode=ceil_mode)
    x = np.random.default_rng(1).normal(size=(2, 11, 11, 3)).astype("float32")
    infer, train = _value_and_grad(pool, x, False), _value_and_grad(pool, x, True)
    for a, b in zip(infer, train, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _pool_ops(lambda t: pool(t, training=False), x.shape) == ["MaxPoolV2"]
    assert _pool_ops(lambda t: pool(t, training=True), x.shape) == ["MaxPool"]


@pytest.mark.parametrize("name", ["googlenet", "alexnet_owt", "vgg11_bn", "resnet18"])
def test_zoo_models_infer_with_maxpoolv2_and_train_with_maxpool(name):
    model = create_model(name, num_classes=3, input_shape=(64, 64, 3))
    shape = (1, 64, 64, 3)
    infer = _pool_ops(lambda x: model(x, training=False), shape)
    train = _pool_ops(lambda x: model(x, training=True), shape)
    assert infer and set(infer) == {"MaxPoolV2"}
    assert len(train) == len(infer) and set(train) == {"MaxPool"}


def test_standard_max_pool_traces_maxpool_in_inference_too():
    pool = MaxPooling2D(3, strides=2)
    with standard_max_pool():
        assert _pool_ops(lambda x: pool(x, training=False), (2, 9, 9, 4)) == ["MaxPool"]
    assert _pool_ops(lambda x: pool(x, training=False), (2, 9, 9, 4)) == ["MaxPoolV2"]
