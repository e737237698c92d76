"""One smoke test over every registered model, at its smallest input (``min_input``), 3 channels,
3 classes and a small width where the family has a width argument: output shape, no NaN, a
gradient for every trainable weight, get_config/from_config round trip, and a .keras save/load
that gives the same outputs. One variant per family runs by default, every variant with
``pytest -m slow tests/test_registry_smoke.py``. Full-size counts are checked in the family test
files."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.layers.pointwise_conv import PointwiseConv2D, strided_pointwise_convs
from kerasdl.registry import create_model, get_entry, list_models

# Thinner variants of the same architecture (depth and block structure unchanged), applied only
# when the family's constructor takes the argument. Keyed by family; the value maps the variant's
# registered defaults to overrides.
SMALL_WIDTH = {
    "alexnet": lambda d: {"fc_units": 64},
    "vgg": lambda d: {"fc_units": 64},
    "resnet": lambda d: (
        {"width_per_group": 8 if d.get("groups", 1) == 1 else 1}
        if d.get("block", "bottleneck") == "bottleneck"
        else {}
    ),
    "densenet": lambda d: {"growth_rate": 4, "num_init_features": 8},
    "wide_resnet": lambda d: {"widen_factor": 1},
    "darts": lambda d: {"init_channels": 4},
    "efficientnet": lambda d: {"width_mult": 0.25},
    "vit": lambda d: {"hidden_dim": 8 * d["num_heads"], "mlp_dim": 16 * d["num_heads"]},
}

# The default suite smoke-tests one variant per family (the cheapest to build: building, saving
# and reloading a deep model costs tens of seconds on a loaded 2-core CPU); every other variant
# runs under the slow marker (pytest -m slow). A family not listed here is covered by its
# alphabetically first variant, so new families are smoke-tested without editing this file.
REPRESENTATIVE = {
    "foundations": ("mlp", "perceptron"),
    "alexnet": "alexnet_owt",
    "densenet": "densenet121",
    "efficientnet": "efficientnet_b0",
    "resnet": "resnet18",
    "resnet_cifar": "resnet20",
    "vgg": "vgg11",
    "vit": "vit_ti_16",
    "wide_resnet": "wrn_28_2",
}
# Shallower versions for the representative only (the slow variants keep their real depth).
FAST_DEPTH = {
    "densenet": {"block_config": [2, 2, 2, 2]},
    "darts": {"layers": 5},
    "vit": {"num_layers": 2},
}


def _representatives() -> set[str]:
    chosen: set[str] = set()
    families: set[str] = set()
    for name in list_models():
        family = get_entry(name).family
        if family not in families:
            families.add(family)
            picked = REPRESENTATIVE.get(family, name)
            chosen.update([picked] if isinstance(picked, str) else picked)
    return chosen


def _params():
    fast = _representatives()
    return [
        pytest.param(n) if n in fast else pytest.param(n, marks=pytest.mark.slow)
        for n in list_models()
    ]


def _small_kwargs(name: str) -> dict:
    entry = get_entry(name)
    side = entry.min_input
    kwargs = {"num_classes": 3, "input_shape": [side, side, 3]}
    small = SMALL_WIDTH.get(entry.family)
    accepted = inspect.signature(entry.builder).parameters
    if small:
        kwargs.update({k: v for k, v in small(entry.defaults).items() if k in accepted})
    if name in _representatives():
        fast = FAST_DEPTH.get(entry.family, {})
        kwargs.update({k: v for k, v in fast.items() if k in accepted})
    return kwargs


def _outputs(out) -> list:
    return list(out) if isinstance(out, tuple | list) else [out]


@pytest.mark.parametrize("name", _params())
def test_model_smoke(name, tmp_path):
    keras.utils.set_random_seed(0)
    kwargs = _small_kwargs(name)
    model = create_model(name, **kwargs)
    side = kwargs["input_shape"][0]
    x = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype("float32")

    # the zoo names its strided 1x1 convolutions PointwiseConv2D (layers/exact_conv.py keeps
    # their filter gradients right on AVX2 + oneDNN)
    strided_1x1 = strided_pointwise_convs(model)
    assert all(isinstance(layer, PointwiseConv2D) for layer in strided_1x1), strided_1x1

    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 3)
    assert np.all(np.isfinite(y))

    labels = keras.ops.one_hot(np.array([0, 2]), 3)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        outs = _outputs(model(x, training=True))
        loss = sum(loss_fn(labels, o) for o in outs)
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads, strict=True) if g is None]
    assert not missing, f"no gradient for {missing}"
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(g))) for g in grads)

    # load_model rebuilds the model with from_config(get_config()): one build checks both.
    y = keras.ops.convert_to_numpy(model(x, training=False))  # moving statistics were updated
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), y, rtol=1e-4, atol=1e-5
    )
