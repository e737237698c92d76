"""Every serialisable layer of ``kerasdl.layers`` through :func:`layer_testing.run_layer_test`.

The registered layer classes are found by walking the ``kerasdl.layers`` modules; a class without
a case here fails ``test_every_registered_layer_has_a_case``, so a new layer is tested from the
day it lands. Behaviour (numbers against references) is tested in the family test files.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import keras
import pytest
from layer_testing import run_layer_test

import kerasdl.layers
from kerasdl.configurable import ConfigurableLayer


def defined_layer_classes() -> dict[str, type]:
    """``{name: class}`` of the layer classes that the ``kerasdl.layers`` modules define."""
    found = {}
    for info in pkgutil.iter_modules(kerasdl.layers.__path__):
        module = importlib.import_module(f"{kerasdl.layers.__name__}.{info.name}")
        for name, cls in vars(module).items():
            if (
                inspect.isclass(cls)
                and issubclass(cls, keras.layers.Layer)
                and cls.__module__ == module.__name__
            ):
                found[name] = cls
    return found


def _registered(cls: type) -> bool:
    return keras.saving.get_registered_name(cls).startswith("kerasdl>")


LAYERS = {name: cls for name, cls in defined_layer_classes().items() if _registered(cls)}
IMAGE = (2, 8, 8, 6)
TOKENS = (2, 5, 8)
INCEPTION = dict(ch1x1=4, ch3x3red=3, ch3x3=4, ch5x5red=2, ch5x5=4, pool_proj=4)

# (class name, constructor arguments, input shape, further run_layer_test arguments)
CASES: list[tuple[str, dict[str, Any], tuple[int, ...], dict[str, Any]]] = [
    ("Swish", {}, IMAGE, {}),
    ("Swish", {"beta": 1.5, "trainable_beta": True}, IMAGE, {}),
    ("SiLU", {}, IMAGE, {}),
    ("ReLUConvBN", {"channels": 8}, IMAGE, {"expected_output_shape": (2, 8, 8, 8)}),
    ("ReLUConvBN", {"channels": 8, "kernel_size": 3, "stride": 2, "affine": False}, IMAGE, {}),
    ("DilConv", {"channels": 6}, IMAGE, {"expected_output_shape": IMAGE}),
    ("DilConv", {"channels": 6, "kernel_size": 5, "stride": 2}, IMAGE, {}),
    ("SepConv", {"channels": 6, "kernel_size": 5}, IMAGE, {}),
    ("SepConv", {"channels": 6, "stride": 2, "affine": False}, (2, 7, 7, 6), {}),
    ("FactorizedReduce", {"channels": 8}, (2, 7, 7, 6), {"expected_output_shape": (2, 4, 4, 8)}),
    ("Pool3x3", {"mode": "max"}, IMAGE, {}),
    ("Pool3x3", {"mode": "avg", "stride": 2}, IMAGE, {"expected_output_shape": (2, 4, 4, 6)}),
    ("Zero", {"stride": 2}, IMAGE, {"expected_output_shape": (2, 4, 4, 6)}),
    ("DenseLayer", {"growth_rate": 4, "bn_size": 2, "dropout": 0.2}, IMAGE, {}),
    ("DenseBlock", {"num_layers": 2, "growth_rate": 4, "bn_size": 2}, IMAGE, {}),
    ("Transition", {"filters": 4, "norm": "group"}, IMAGE, {}),
    ("DropConnectDense", {"units": 5, "rate": 0.3, "seed": 1, "activation": "relu"}, (4, 6), {}),
    ("DropPath", {"rate": 0.2, "seed": 3}, IMAGE, {}),
    ("FusedBatchNormalization", {"momentum": 0.9, "epsilon": 1e-5}, IMAGE, {}),
    ("FlexibleGroupNorm", {"groups": 4}, IMAGE, {}),  # 6 channels: 3 groups
    ("FlexibleGroupNorm", {"groups": -1}, IMAGE, {}),
    ("ConvNormAct", {"filters": 8, "kernel_size": 3, "strides": 2}, IMAGE, {}),
    ("InceptionModule", INCEPTION, IMAGE, {"expected_output_shape": (2, 8, 8, 16)}),
    ("InceptionModule", {**INCEPTION, "branch3_kernel": 5, "norm": "layer"}, IMAGE, {}),
    # Its logits are float32 by design (a classifier head).
    ("InceptionAux", {"num_classes": 3}, IMAGE, {"mixed_output_dtype": "float32"}),
    ("MBConv", {"input_channels": 6, "out_channels": 6, "drop_path": 0.1}, IMAGE, {}),
    ("MBConv", {"input_channels": 6, "out_channels": 8, "expand_ratio": 1, "stride": 2}, IMAGE, {}),
    ("SqueezeExcitation", {"input_channels": 6, "squeeze_channels": 2}, IMAGE, {}),
    ("BasicBlock", {"filters": 6}, IMAGE, {}),
    ("BasicBlock", {"filters": 8, "strides": 2, "shortcut": "projection"}, IMAGE, {}),
    ("BasicBlock", {"filters": 8, "strides": 2, "shortcut": "zero_pad"}, IMAGE, {}),
    ("Bottleneck", {"filters": 4, "shortcut": "projection", "groups": 2}, IMAGE, {}),
    (
        "PreActBlock",
        {"filters": 8, "strides": 2, "projection": True, "dropout": 0.1},
        IMAGE,
        {"expected_output_shape": (2, 4, 4, 8)},
    ),
    ("PreActBlock", {"filters": 6, "kernel_initializer": "glorot_uniform"}, IMAGE, {}),
    ("PaddedConv2D", {"filters": 4, "kernel_size": 4, "pad": 1, "strides": 2}, IMAGE, {}),
    ("PaddedDepthwiseConv2D", {"kernel_size": 3, "pad": 1, "strides": 2}, IMAGE, {}),
    (
        "PaddedDepthwiseConv2D",
        {"kernel_size": 5, "pad": 2, "depth_multiplier": 2, "use_bias": True, "activation": "relu"},
        IMAGE,
        {},
    ),
    ("GroupedConv2D", {"filters": 6, "kernel_size": 3, "groups": 3, "padding": "same"}, IMAGE, {}),
    (
        "PointwiseConv2D",
        {"filters": 4, "strides": 2},
        IMAGE,
        {"expected_output_shape": (2, 4, 4, 4)},
    ),
    ("PointwiseConv2D", {"filters": 4, "strides": 2, "padding": "same"}, (2, 7, 7, 9), {}),
    ("MaxPooling2D", {"pool_size": 3, "strides": 2}, IMAGE, {}),
    ("MaxPooling2D", {"pool_size": 2, "padding": "same"}, (2, 7, 7, 3), {}),
    (
        "PaddedConv2D",
        {"filters": 6, "kernel_size": 3, "pad": 1, "strides": 2, "groups": 3},
        IMAGE,
        {},
    ),
    (
        "PaddedMaxPooling2D",
        {"pool_size": 3, "strides": 2, "padding": 1, "ceil_mode": True},
        IMAGE,
        {},
    ),
    ("AdaptiveAveragePooling2D", {"output_size": (3, 5)}, IMAGE, {}),
    ("PatchEmbedding", {"hidden_dim": 8, "patch_size": 4}, IMAGE, {}),
    (
        "PatchEmbedding",
        {"hidden_dim": 8, "patch_size": 2, "class_token": False, "position_embedding": "sincos"},
        IMAGE,
        {"expected_output_shape": (2, 16, 8)},
    ),
    ("TransformerMLP", {"mlp_dim": 16, "dropout": 0.1}, TOKENS, {}),
    ("TransformerEncoderBlock", {"num_heads": 2, "mlp_dim": 16}, TOKENS, {}),
    (
        "TransformerEncoderBlock",
        {"num_heads": 2, "mlp_dim": 16, "drop_path": 0.1, "weight_init": "mae", "qkv_bias": False},
        TOKENS,
        {},
    ),
]


def _params() -> list:
    seen: dict[str, int] = {}
    params = []
    for name, kwargs, shape, extra in CASES:
        seen[name] = seen.get(name, -1) + 1
        params.append(pytest.param(name, kwargs, shape, extra, id=f"{name}-{seen[name]}"))
    return params


@pytest.mark.parametrize(("name", "init_kwargs", "input_shape", "extra"), _params())
def test_layer(name: str, init_kwargs: dict, input_shape: tuple, extra: dict) -> None:
    run_layer_test(LAYERS[name], init_kwargs, input_shape, **extra)


def test_every_public_layer_is_registered() -> None:
    """A public layer class must load from a .keras file: registered under ``kerasdl>``."""
    public = {name for name in defined_layer_classes() if not name.startswith("_")}
    assert sorted(public - set(LAYERS)) == [], "public layers not registered as serializable"


def test_every_registered_layer_has_a_case() -> None:
    cased = {name for name, *_ in CASES}
    assert sorted(set(LAYERS) - cased) == [], "registered layers without a case in CASES"
    assert sorted(cased - set(LAYERS)) == [], "cases for classes that are not registered layers"


def test_constructor_arguments_are_the_config() -> None:
    """The shared capture: arguments (defaults included) become attributes before the body runs
    and the config after it; a normalised attribute is what the config records; a subclass adds
    its arguments to its parent's."""

    class Base(ConfigurableLayer):
        def __init__(self, width: int, ratio: float = 0.5, sizes=(1, 2), **kwargs: Any) -> None:
            super().__init__(**kwargs)
            assert self.width == width and self.sizes == [1, 2]  # set before the body
            self.ratio = float(ratio)

    class Child(Base):
        def __init__(self, width: int, extra: str = "x", **kwargs: Any) -> None:
            super().__init__(width, **kwargs)

    config = Child(3, ratio=1, name="c").get_config()
    assert {k: config[k] for k in ("width", "ratio", "sizes", "extra", "name")} == {
        "width": 3,
        "ratio": 1.0,
        "sizes": [1, 2],
        "extra": "x",
        "name": "c",
    }
    assert isinstance(config["ratio"], float)
    assert Child.from_config(config).get_config() == config


def test_keras_objects_in_arguments_are_serialised() -> None:
    block = LAYERS["BasicBlock"](8, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    config = block.get_config()
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    clone = LAYERS["BasicBlock"].from_config(config)
    assert isinstance(clone.kernel_initializer, keras.initializers.GlorotUniform)
    assert clone.get_config() == config
