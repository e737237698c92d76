"""EfficientNet: exact torchvision parameter counts, MBConv / squeeze-excitation behaviour, the
per-variant batch-norm settings, stochastic depth schedule and compound scaling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdl import create_model
from kerasdl.layers.mbconv import MBConv, make_divisible
from kerasdl.layers.squeeze_excite import SqueezeExcitation
from kerasdl.models.efficientnet import (
    EfficientNet,
    compound_scaling,
    efficientnet_param_count,
    efficientnet_phi,
)
from kerasdl.models.macs import count_macs
from kerasdl.registry import get_entry

TORCHVISION_COUNTS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_torchvision_counts_analytic(name):
    assert efficientnet_param_count(**get_entry(name).defaults) == TORCHVISION_COUNTS[name]


def test_b0_built_count_and_formula():
    model = create_model("efficientnet_b0")
    assert _trainable(model) == TORCHVISION_COUNTS["efficientnet_b0"]
    assert model.output.shape == (None, 1000)
    assert count_macs(model) / 1e9 == pytest.approx(0.39, rel=0.02)  # torchvision's figure
    # The formula also holds off the table: other widths, depths, classes and channels.
    small = EfficientNet(num_classes=7, input_shape=(32, 32, 1), width_mult=0.5, depth_mult=0.4)
    assert _trainable(small) == efficientnet_param_count(**small.get_config())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS)[1:])
def test_built_counts(name):
    assert _trainable(create_model(name, input_shape=(224, 224, 3))) == TORCHVISION_COUNTS[name]


def test_batch_norm_settings_follow_torchvision():
    model = create_model("efficientnet_b0", input_shape=(32, 32, 3))
    bn = model.get_layer("stem_bn")
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    for name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7"):
        d = get_entry(name).defaults
        assert (d["bn_epsilon"], d["bn_momentum"]) == (1e-3, 0.99)
    for name in ("efficientnet_b0", "efficientnet_b4"):
        assert "bn_epsilon" not in get_entry(name).defaults


def test_stochastic_depth_is_linear_over_blocks():
    model = create_model("efficientnet_b0", input_shape=(32, 32, 3), num_classes=3)
    rates = [layer.drop_path for layer in model.layers if isinstance(layer, MBConv)]
    assert len(rates) == 16
    np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)
    assert model.get_layer("head_dropout").rate == 0.2


def test_squeeze_excitation_matches_numpy():
    rng = np.random.default_rng(0)
    se = SqueezeExcitation(6, 2, activation="silu")
    x = rng.normal(size=(2, 4, 5, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(se(x))
    w1, b1 = [keras.ops.convert_to_numpy(v) for v in se.fc1.weights]
    w2, b2 = [keras.ops.convert_to_numpy(v) for v in se.fc2.weights]
    s = x.mean(axis=(1, 2)) @ w1[0, 0] + b1
    s = s / (1 + np.exp(-s))
    gate = 1 / (1 + np.exp(-(s @ w2[0, 0] + b2)))
    np.testing.assert_allclose(y, x * gate[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_mbconv_structure():
    block = MBConv(16, 24, expand_ratio=6, kernel_size=5, stride=2)
    # PyTorch padding (k-1)//2 on every side: out = floor((n + 2p - k) / 2) + 1.
    assert block(np.zeros((1, 15, 16, 16), "float32")).shape == (1, 8, 8, 24)
    assert not block.use_residual and block.expanded == 96
    assert block.se.squeeze_channels == 4  # a quarter of the *input* channels
    same = MBConv(24, 24, expand_ratio=1, stride=1, drop_path=0.5)
    assert same.use_residual and same.expand is None
    x = np.random.default_rng(1).normal(size=(64, 4, 4, 24)).astype("float32")
    branch_free = keras.ops.convert_to_numpy(same(x, training=True))
    # With drop-path 0.5 about half of the samples are the identity in training mode.
    identity = np.all(np.isclose(branch_free, x), axis=(1, 2, 3))
    assert 0.25 < identity.mean() < 0.75
    clone = MBConv.from_config(same.get_config())
    assert clone.get_config() == same.get_config()


def test_make_divisible():
    assert make_divisible(32 * 1.1) == 32  # 35.2 -> 32 (within 10%)
    assert make_divisible(16 * 1.4) == 24  # 22.4 -> 24
    assert make_divisible(320 * 1.1) == 352
    assert make_divisible(10) == 16  # 8 would lose more than 10%


def test_compound_scaling():
    assert compound_scaling(0) == (1.0, 1.0, 224)
    width, depth, res = compound_scaling(1)
    assert (width, depth, res) == (pytest.approx(1.1), pytest.approx(1.2), 258)
    # alpha * beta^2 * gamma^2 ~ 2: FLOPs about double per unit of phi.
    assert 1.2 * 1.1**2 * 1.15**2 == pytest.approx(1.92, abs=0.01)
    model = efficientnet_phi(-3, num_classes=5)
    w, d, r = compound_scaling(-3)
    assert model.input_shape_ == (r, r, 3) and (model.width_mult, model.depth_mult) == (w, d)
    assert _trainable(model) == efficientnet_param_count(**model.get_config())
    assert model(np.zeros((1, r, r, 3), "float32")).shape == (1, 5)


@pytest.mark.parametrize(("stride", "kernel"), [(1, 3), (2, 5)])
def test_mbconv_inference_folds_the_depthwise_batch_norm(stride: int, kernel: int) -> None:
    """In inference the stride-1 depthwise conv runs with its batch norm folded into kernel and
    bias: the same outputs as the conv followed by the batch norm, and no batch-norm op."""
    import tensorflow as tf

    from kerasdl.layers.mbconv import MBConv

    block = MBConv(16, 24, expand_ratio=6, kernel_size=kernel, stride=stride, name="b")
    x = tf.random.stateless_normal((2, 14, 14, 16), seed=(1, 2))
    block(x)
    rng = np.random.default_rng(0)
    bn = block.depthwise_bn
    for v, draw in (
        (bn.moving_mean, lambda s: rng.normal(size=s)),
        (bn.moving_variance, lambda s: rng.uniform(0.2, 3.0, size=s)),
        (bn.gamma, lambda s: rng.normal(size=s)),
        (bn.beta, lambda s: rng.normal(size=s)),
    ):
        v.assign(draw(v.shape))
    infer = tf.function(lambda a: block(a, training=False))
    graph = infer.get_concrete_function(tf.TensorSpec(x.shape)).graph
    bn_ops = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]
    # the 1x1 expand and project convs keep theirs (oneDNN folds those itself)
    assert len(bn_ops) == (2 if stride == 1 else 3)
    folded = infer(x)
    object.__setattr__(block, "_fold_ok", lambda training: False)
    unfolded = tf.function(lambda a: block(a, training=False))(x)
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)
    assert float(tf.reduce_max(tf.abs(unfolded))) > 0.5  # the statistics matter


def test_padded_depthwise_with_bias_in_a_graph_does_not_abort() -> None:
    """TensorFlow 2.21 aborts the process (a CHECK failure in shape inference) when an
    explicitly padded depthwise conv is followed by a bias add in a graph; the layer pads with
    ``ops.pad`` when it has a bias. Run in a child process: an abort would kill pytest."""
    import subprocess
    import sys

    code = (
        "import numpy as np, tensorflow as tf\n"
        "from kerasdl.layers.torch_compat import PaddedDepthwiseConv2D\n"
        "layer = PaddedDepthwiseConv2D(5, pad=2, strides=2, use_bias=True)\n"
        "x = np.ones((2, 16, 16, 8), 'float32')\n"
        "f = tf.function(lambda a: tf.nn.relu(layer(a)), autograph=False)\n"
        "print(f(x).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(2, 8, 8, 8)" in proc.stdout
