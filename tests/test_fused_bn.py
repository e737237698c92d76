"""FusedBatchNormalization against keras.layers.BatchNormalization: outputs, moving statistics,
gradients, mixed precision, configuration and saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.layers.fused_bn import FusedBatchNormalization
from kerasdl.layers.normalization import BN_EPSILON, BN_MOMENTUM, get_norm_layer


def _pair(**kwargs):
    """A fused layer and a Keras layer with identical (non-trivial) weights."""
    kwargs = {"momentum": BN_MOMENTUM, "epsilon": BN_EPSILON, **kwargs}
    fused = FusedBatchNormalization(**kwargs)
    ref = keras.layers.BatchNormalization(**kwargs)
    shape = (4, 5, 6, 3)
    fused.build(shape)
    ref.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in ref.weights]
    ref.set_weights(weights)
    fused.set_weights(weights)
    return fused, ref


def _x(seed: int = 1, shape=(4, 5, 6, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 2.0 + 0.7).astype("float32")


@pytest.mark.parametrize("center_scale", [(True, True), (False, False)])
def test_training_and_inference_match_keras(center_scale):
    center, scale = center_scale
    fused, ref = _pair(center=center, scale=scale)
    assert [w.path.split("/")[-1] for w in fused.weights] == [
        w.path.split("/")[-1] for w in ref.weights
    ]
    for step in range(3):  # several updates: the moving statistics must track Keras's
        x = _x(step)
        np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=2e-5)
        for wf, wr in zip(fused.weights, ref.weights, strict=True):
            np.testing.assert_allclose(wf.numpy(), wr.numpy(), rtol=1e-5, atol=1e-6)
    x = _x(9)
    out = fused(x, training=False)
    np.testing.assert_allclose(out, ref(x, training=False), atol=2e-5)
    # The moving variance is the biased one (Keras), not the Bessel-corrected kernel output.
    fresh = FusedBatchNormalization(momentum=0.0, epsilon=BN_EPSILON)
    fresh(x, training=True)
    np.testing.assert_allclose(fresh.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-5)


def test_frozen_layer_uses_moving_statistics():
    fused, ref = _pair()
    fused.trainable = ref.trainable = False
    x = _x(3)
    before = fused.moving_mean.numpy().copy()
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), atol=2e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


def test_gradients_match_keras():
    fused, ref = _pair()
    x = tf.constant(_x(4))
    upstream = tf.constant(_x(5))

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    for gf, gr in zip(grads(fused), grads(ref), strict=True):
        np.testing.assert_allclose(gf, gr, rtol=1e-4, atol=1e-4)


def test_fallback_for_other_ranks():
    dense_f = FusedBatchNormalization(momentum=0.9)
    dense_r = keras.layers.BatchNormalization(momentum=0.9)
    x = _x(6, (8, 3))
    np.testing.assert_allclose(dense_f(x, training=True), dense_r(x, training=True), atol=1e-5)
    np.testing.assert_allclose(dense_f.moving_variance.numpy(), dense_r.moving_variance.numpy())


def test_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        fused = FusedBatchNormalization(momentum=0.9)
        ref = keras.layers.BatchNormalization(momentum=0.9)
        x = _x(7)
        yf = fused(x, training=True)
        yr = ref(x, training=True)
        assert keras.backend.standardize_dtype(yf.dtype) == "bfloat16"
        assert fused.moving_mean.dtype == "float32" and fused.gamma.dtype == "float32"
        np.testing.assert_allclose(
            tf.cast(yf, tf.float32), tf.cast(yr, tf.float32), atol=0.05, rtol=0.02
        )
        np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), atol=0.02)
        yi = fused(x, training=False)
        assert keras.backend.standardize_dtype(yi.dtype) == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip_and_get_norm_layer():
    layer = get_norm_layer("batch", name="bn", gamma_zero=True, center=False)
    assert isinstance(layer, FusedBatchNormalization)
    assert isinstance(layer, keras.layers.BatchNormalization)
    config = layer.get_config()
    again = FusedBatchNormalization.from_config(config)
    assert again.get_config() == config
    assert config["momentum"] == BN_MOMENTUM and config["epsilon"] == BN_EPSILON
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is FusedBatchNormalization


def test_model_save_and_load(tmp_path):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = get_norm_layer("batch", name="bn")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    data = _x(8, (16, 6, 6, 2))
    model.fit(data, np.zeros((16, 3), "float32"), epochs=1, batch_size=8, verbose=0)
    assert model.count_params() == 2 * 3 * 3 * 4 + 4 + 4 * 4 + 4 * 3 + 3
    assert len(model.get_layer("bn").trainable_weights) == 2
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


def _op_types(layer, shape, training):
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(shape)).graph
    return {op.type for op in graph.get_operations()}


def test_configure_batch_norm_reaches_nested_layers_of_a_built_model():
    from kerasdl.layers.normalization import batch_norm_layers, configure_batch_norm
    from kerasdl.registry import create_model

    model = create_model("resnet20", input_shape=[8, 8, 3], filters=[4, 4, 4])
    bns = batch_norm_layers(model)
    assert len(bns) == 1 + 2 * 9  # the stem and two per residual block (inside the blocks)
    assert not any(bn.synchronized for bn in bns)
    assert configure_batch_norm(model, synchronized=True) is model
    assert all(bn.synchronized for bn in bns)
    assert all(bn.get_config()["synchronized"] for bn in bns)  # saved with the model
    configure_batch_norm(model, fused=False)  # synchronized untouched
    assert all(bn.synchronized and not bn.use_fused_kernel for bn in bns)
    configure_batch_norm(model, synchronized=False, fused=True)
    assert not any(bn.synchronized for bn in bns) and all(bn.use_fused_kernel for bn in bns)


def test_fused_kernel_can_be_turned_off_per_model():
    from kerasdl.layers.normalization import configure_batch_norm

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, get_norm_layer("batch", name="bn")(inputs))
    assert "FusedBatchNormV3" in _op_types(model, (2, 4, 4, 3), True)
    configure_batch_norm(model, fused=False)
    for training in (True, False):
        assert "FusedBatchNormV3" not in _op_types(model, (2, 4, 4, 3), training)
    x = _x(0, (2, 4, 4, 3))
    ref = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    np.testing.assert_allclose(model(x, training=True), ref(x, training=True), atol=1e-5)
    assert type(get_norm_layer("batch")) is FusedBatchNormalization  # no global switch


def test_fused_kernel_is_used_for_4d_and_not_for_2d():
    op_types = _op_types
    layer = get_norm_layer("batch")
    assert "FusedBatchNormV3" in op_types(layer, (2, 4, 4, 3), True)
    assert "FusedBatchNormV3" in op_types(layer, (2, 4, 4, 3), False)
    assert "FusedBatchNormV3" not in op_types(get_norm_layer("batch"), (2, 3), True)
