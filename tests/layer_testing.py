"""``run_layer_test``: the checks every serialisable kerasdl layer passes.

After Keras's own ``keras.src.testing.TestCase.run_layer_test``, cut to what kerasdl's layers need
and strict where saving is concerned: build on the input shape, eager and functional calls, the
declared output shape, the config round trip (through JSON, as a file stores it) with the same
outputs, a ``.keras`` save/load of a small functional model with identical outputs, a
mixed-precision policy and a training-mode call with a gradient on every trainable weight.
Pytest puts ``tests/`` on the path, so test modules import it as ``from layer_testing import
run_layer_test``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _numpy(x: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def _shape(shape: Any) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def _weights_by_path(layer: keras.layers.Layer) -> dict[str, tuple]:
    """``{path relative to the layer: shape}`` of every weight of ``layer``."""
    prefix = f"{layer.path}/" if layer.path else ""
    return {w.path.removeprefix(prefix): tuple(w.shape) for w in layer.weights}


def _declares_output_shape(layer_cls: type) -> bool:
    return layer_cls.compute_output_shape is not keras.layers.Layer.compute_output_shape


def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    *,
    call_kwargs: dict[str, Any] | None = None,
    expected_output_shape: tuple[int | None, ...] | None = None,
    mixed_policy: str = "mixed_bfloat16",
    mixed_output_dtype: str | None = None,
    mixed_tolerance: float = 0.1,
    run_mixed_precision_check: bool = True,
    run_training_check: bool = True,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> keras.layers.Layer:
    """Check that ``layer_cls(**init_kwargs)`` builds, runs, serialises and saves correctly.

    Checks, each on a fresh layer:

    1. **build**: ``build(input_shape)`` makes the layer built, with the same weights (paths
       and shapes) as a layer built by a call;
    2. **eager call**: the output has the expected shape, is finite and float32, and equals
       ``compute_output_shape(input_shape)`` where the class declares it;
    3. **functional call**: a symbolic call gives the same shape (batch left ``None``);
    4. **config**: ``get_config()`` is JSON-serialisable; ``from_config`` of its JSON round trip
       gives an equal config, a layer that (weights copied) computes the same outputs, and
       ``keras.saving.serialize_keras_object`` / ``deserialize_keras_object`` (the registered
       name) gives the same class and config;
    5. **.keras file**: a functional model around the layer, saved and loaded (safe mode), gives
       identical outputs and the same layer config;
    6. **mixed precision** (``mixed_policy`` as the global policy, as kerasdl's runner sets it):
       the output dtype is the policy's compute dtype
       (or ``mixed_output_dtype`` for a layer that returns float32 by design), every float
       variable stays float32 and, with the float32 layer's weights, the output is within
       ``mixed_tolerance`` (relative to the output's scale) of the float32 one;
    7. **training**: a ``training=True`` call is finite, of the same shape, and gives a finite
       gradient to every trainable weight.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_shape: the input's full shape, batch included.
        call_kwargs: extra call arguments (not ``training``).
        expected_output_shape: the output's full shape, where the test knows it.
        mixed_policy: the mixed-precision policy to try.
        mixed_output_dtype: the output dtype under ``mixed_policy`` (default: its compute dtype).
        mixed_tolerance: allowed mixed-precision deviation, relative to ``max|y|``.
        run_mixed_precision_check: run check 6.
        run_training_check: run check 7.
        tolerance: allowed deviation (absolute and relative) of outputs that must be equal.
        seed: seed of the input data and of the layers' initialisation.

    Returns:
        The layer of the eager call (built, float32), for further checks.
    """
    call_kwargs = dict(call_kwargs or {})
    input_shape = _shape(input_shape)
    x = np.random.default_rng(seed).normal(size=input_shape).astype("float32")
    name = layer_cls.__name__

    def make(**extra: Any) -> keras.layers.Layer:
        return layer_cls(**{**init_kwargs, **extra})

    def infer(layer: keras.layers.Layer, inputs: Any = x) -> np.ndarray:
        return _numpy(layer(inputs, training=False, **call_kwargs))

    def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
        np.testing.assert_allclose(
            actual, expected, rtol=tolerance, atol=tolerance, err_msg=f"{name}: {what}"
        )

    # 1-2. Eager call, then a layer built from the shape alone.
    keras.utils.set_random_seed(seed)
    layer = make()
    y = layer(x, training=False, **call_kwargs)
    out_shape = tuple(y.shape)
    assert keras.backend.standardize_dtype(y.dtype) == "float32", f"{name}: dtype {y.dtype}"
    assert np.all(np.isfinite(_numpy(y))), f"{name}: non-finite output"
    if expected_output_shape is not None:
        assert out_shape == _shape(expected_output_shape), f"{name}: output shape {out_shape}"
    if _declares_output_shape(layer_cls):
        declared = _shape(layer.compute_output_shape(input_shape))
        assert declared == out_shape, f"{name}: compute_output_shape {declared} != {out_shape}"
        unknown_batch = _shape(layer.compute_output_shape((None, *input_shape[1:])))
        assert unknown_batch == (None, *out_shape[1:]), f"{name}: {unknown_batch} (batch None)"

    built = make()
    built.build(input_shape)
    assert built.built, f"{name}: not built by build({input_shape})"
    assert _weights_by_path(built) == _weights_by_path(layer), (
        f"{name}: build(input_shape) made other weights than a call:\n"
        f"  build: {_weights_by_path(built)}\n  call:  {_weights_by_path(layer)}"
    )
    built.set_weights(layer.get_weights())
    assert_same(infer(built), _numpy(y), "a layer built by build() and given the weights")

    # 3. Symbolic call inside a functional model.
    inputs = keras.Input(batch_shape=(None, *input_shape[1:]))
    symbolic = make()
    outputs = symbolic(inputs, **call_kwargs)
    assert _shape(outputs.shape) == (None, *out_shape[1:]), f"{name}: symbolic {outputs.shape}"
    model = keras.Model(inputs, outputs)

    # 4. Config round trips.
    config = layer.get_config()
    text = json.dumps(config)  # a config must be JSON (a .keras file stores it so)
    clone = layer_cls.from_config(json.loads(text))
    assert clone.get_config() == config, f"{name}: from_config changed the config"
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    assert_same(infer(clone), _numpy(y), "from_config(get_config()) with the same weights")
    registered = keras.saving.get_registered_name(layer_cls)
    assert registered.startswith("kerasdl>"), f"{name}: not registered ({registered})"
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert type(revived) is layer_cls and revived.get_config() == config

    # 5. .keras save and load.
    expected = infer(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert_same(infer(loaded), expected, ".keras save/load")
    loaded_layer = loaded.get_layer(symbolic.name)
    assert type(loaded_layer) is layer_cls and loaded_layer.get_config() == symbolic.get_config()

    # 6. Mixed precision, as kerasdl runs it: a global policy (sub-layers follow it).
    if run_mixed_precision_check:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(mixed_policy)
        try:
            mixed = make()
            y_mixed = mixed(x, training=False, **call_kwargs)
            mixed.set_weights(layer.get_weights())
            y_copied = infer(mixed)
        finally:
            keras.config.set_dtype_policy(previous)
        compute_dtype = keras.DTypePolicy(mixed_policy).compute_dtype
        got = keras.backend.standardize_dtype(y_mixed.dtype)
        assert got == (mixed_output_dtype or compute_dtype), f"{name}: {mixed_policy} gives {got}"
        for w in mixed.weights:
            if keras.backend.is_float_dtype(w.dtype):
                assert w.dtype == "float32", f"{name}: {w.path} is {w.dtype} ({mixed_policy})"
        reference = _numpy(y)
        scale = max(float(np.abs(reference).max()), 1e-3)
        deviation = float(np.abs(y_copied - reference).max()) / scale
        assert deviation <= mixed_tolerance, f"{name}: {mixed_policy} deviates by {deviation:.3f}"

    # 7. Training mode.
    if run_training_check:
        with tf.GradientTape() as tape:
            y_train = layer(x, training=True, **call_kwargs)
            loss = keras.ops.sum(keras.ops.cast(y_train, "float32") ** 2)
        assert tuple(y_train.shape) == out_shape, f"{name}: training-mode shape {y_train.shape}"
        assert np.all(np.isfinite(_numpy(y_train))), f"{name}: non-finite training output"
        grads = tape.gradient(loss, layer.trainable_weights)
        missing = [w.path for w, g in zip(layer.trainable_weights, grads, strict=True) if g is None]
        assert not missing, f"{name}: no gradient for {missing}"
        assert all(np.all(np.isfinite(_numpy(g))) for g in grads), f"{name}: non-finite gradient"
    return layer


def assert_same_outputs_and_gradients(
    ref: keras.layers.Layer,
    new: keras.layers.Layer,
    x: tf.Tensor,
    forward: Any,
    loss: Any = None,
) -> None:
    """Two layers holding the same weights compute the same function: ``forward(layer, x)``'s
    outputs agree to 1e-5 and the gradients of ``loss(y)`` (default: the sum of squares) with
    respect to the input and every trainable weight to 1e-4."""
    loss = loss or (lambda y: tf.reduce_sum(y**2))

    @tf.function
    def run(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(layer, x)
            value = loss(y)
        return y, tape.gradient(value, [x, *layer.trainable_variables])

    y0, g0 = run(ref, x)
    y1, g1 = run(new, x)
    np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)


def keras_file_round_trip(
    layer: keras.layers.Layer, input_shape: tuple[int, ...], directory: Path, base: type
) -> tuple[keras.Model, keras.Model]:
    """A subclass of Keras layer ``base`` keeps ``base``'s config, and survives a ``.keras`` file
    as its own class: ``layer``'s config rebuilds a ``base`` with the same config, and a
    ``keras.Sequential([Input(input_shape), layer])`` saved in ``directory`` loads back with a
    layer of ``type(layer)``. Returns the model and the loaded one, to compare their outputs."""
    config = layer.get_config()
    assert base.from_config(config).get_config() == config
    model = keras.Sequential([keras.Input(input_shape), layer])
    model.save(Path(directory) / "m.keras")
    again = keras.saving.load_model(Path(directory) / "m.keras")
    assert type(again.layers[0]) is type(layer)
    return model, again
