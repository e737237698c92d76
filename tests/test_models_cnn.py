"""Classic CNN families: exact parameter counts, small-input behaviour, blocks, pooling layers."""

from __future__ import annotations

import gc
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.layers.dense_block import DenseBlock, DenseLayer, Transition
from kerasdl.layers.inception import ConvNormAct, InceptionAux, InceptionModule
from kerasdl.layers.residual import BasicBlock, Bottleneck, PreActBlock, zero_pad_shortcut
from kerasdl.layers.torch_compat import (
    AdaptiveAveragePooling2D,
    PaddedConv2D,
    PaddedMaxPooling2D,
)
from kerasdl.models.alexnet import AlexNet, LocalResponseNormalization
from kerasdl.models.densenet import DenseNet
from kerasdl.models.googlenet import GoogLeNet
from kerasdl.models.resnet import ResNet
from kerasdl.models.resnet_cifar import CifarResNet, WideResNet
from kerasdl.models.vgg import VGG
from kerasdl.registry import create_model, get_entry

SLOW = pytest.mark.slow


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Trainable parameters at 1000 classes, 224x224x3 (torchvision's counts; the paper's for alexnet).
IMAGENET_COUNTS = [
    ("alexnet", 62_378_344),
    ("alexnet_owt", 61_100_840),
    ("vgg11", 132_863_336),
    pytest.param("vgg13", 133_047_848, marks=SLOW),
    pytest.param("vgg16", 138_357_544, marks=SLOW),
    pytest.param("vgg19", 143_667_240, marks=SLOW),
    pytest.param("vgg11_bn", 132_868_840, marks=SLOW),
    pytest.param("vgg13_bn", 133_053_736, marks=SLOW),
    ("vgg16_bn", 138_365_992),
    pytest.param("vgg19_bn", 143_678_248, marks=SLOW),
    ("resnet18", 11_689_512),
    pytest.param("resnet34", 21_797_672, marks=SLOW),
    ("resnet50", 25_557_032),
    pytest.param("resnet101", 44_549_160, marks=SLOW),
    pytest.param("resnet152", 60_192_808, marks=SLOW),
    ("resnext50_32x4d", 25_028_904),
    pytest.param("wide_resnet50_2", 68_883_240, marks=SLOW),
    pytest.param("resnext101_32x8d", 88_791_336, marks=SLOW),
    pytest.param("wide_resnet101_2", 126_886_696, marks=SLOW),
    ("densenet121", 7_978_856),
    pytest.param("densenet169", 14_149_480, marks=SLOW),
    pytest.param("densenet201", 20_013_928, marks=SLOW),
    pytest.param("densenet161", 28_681_000, marks=SLOW),
]


@pytest.mark.parametrize("name,expected", IMAGENET_COUNTS)
def test_imagenet_parameter_count(name, expected):
    model = create_model(name, num_classes=1000, input_shape=(224, 224, 3))
    assert trainable_count(model) == expected
    del model
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        # He et al. 2016 sec. 4.2: option A shortcuts add no parameters ("0.27M").
        ("resnet20", {}, 269_722),
        # Option B: 1x1 projection + BN at the two size changes (16*32 + 64 + 32*64 + 128 more).
        ("resnet20", {"shortcut": "projection"}, 272_474),
        pytest.param("resnet110", {}, 1_727_962, marks=SLOW),  # the paper's "1.7M"
        ("wrn_28_2", {}, 1_467_610),  # FixMatch's WRN-28-2 (torch reference, BN affine included)
        pytest.param("wrn_28_10", {}, 36_479_194, marks=SLOW),  # WRN paper: 36.5M
        pytest.param("wrn_28_8", {}, 23_354_842, marks=SLOW),  # FixMatch's CIFAR-100 backbone
        # The paper's two-GPU AlexNet: conv2/4/5 grouped in two towers.
        ("alexnet", {"groups": 2, "input_shape": (224, 224, 3)}, 60_965_224),
    ],
)
def test_small_input_and_variant_counts(name, kwargs, expected):
    classes = 1000 if name == "alexnet" else 10
    model = create_model(name, num_classes=classes, **kwargs)
    assert trainable_count(model) == expected


def test_googlenet_parameter_counts():
    """torchvision: 6,624,904 without the auxiliary classifiers, 13,004,888 with them."""
    model = create_model("googlenet", num_classes=1000, aux_logits=True)
    assert trainable_count(model) == 13_004_888
    aux = {id(w) for name in ("aux1", "aux2") for w in model.get_layer(name).trainable_weights}
    main = [w for w in model.trainable_weights if id(w) not in aux]
    assert sum(int(np.prod(w.shape)) for w in main) == 6_624_904
    assert get_entry("googlenet").defaults["aux_logits"] is False


# One small model per family (3 classes): forward, gradients, config and .keras round trips.
FAMILY_MODELS = {
    "resnet18": lambda: create_model("resnet18", num_classes=3, input_shape=(32, 32, 3)),
    "resnext_small": lambda: ResNet(
        3,
        (32, 32, 3),
        block="bottleneck",
        depths=[1, 1, 1, 1],
        groups=4,
        width_per_group=8,
        norm="group",
        activation="swish",
        dropout=0.1,
    ),
    "resnet20": lambda: create_model("resnet20", num_classes=3, input_shape=(16, 16, 3)),
    "wrn_16_2": lambda: WideResNet(3, (16, 16, 3), depth=16, widen_factor=2, dropout=0.3),
    "vgg11_bn": lambda: create_model(
        "vgg11_bn", num_classes=3, input_shape=(32, 32, 3), fc_units=64
    ),
    "alexnet_grouped": lambda: create_model(
        "alexnet", num_classes=3, input_shape=(63, 63, 3), fc_units=64, groups=2
    ),
    "alexnet_owt": lambda: create_model(
        "alexnet_owt", num_classes=3, input_shape=(63, 63, 3), fc_units=64, activation="elu"
    ),
    "densenet_small": lambda: DenseNet(
        3,
        (32, 32, 3),
        block_config=[2, 2, 2, 2],
        growth_rate=8,
        num_init_features=16,
        dropout=0.1,
    ),
}


def check_model(model: keras.Model, tmp_path) -> None:
    """Forward shape and finiteness, a gradient for every weight, config and .keras round trips."""
    side = model.input_shape[1]
    x = np.random.default_rng(0).normal(size=(4, side, side, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 1], 3)
    out = np.asarray(model(x, training=False))
    assert out.shape == (4, 3)
    assert np.all(np.isfinite(out))

    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        preds = model(x, training=True)
        preds = preds if isinstance(preds, tuple) else (preds,)
        loss = sum(loss_fn(y, p) for p in preds)
    grads = tape.gradient(loss, model.trainable_weights)
    for w, g in zip(model.trainable_weights, grads, strict=True):
        assert g is not None, f"no gradient for {w.path}"
        assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0), w.path

    # Loading a .keras file rebuilds the model with from_config(get_config()): one build checks
    # both round trips.
    config = model.get_config()
    path = tmp_path / "model.keras"
    model.save(path)  # after the training pass: moving statistics moved, they must be saved too
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == config
    assert trainable_count(loaded) == trainable_count(model)
    np.testing.assert_allclose(
        np.asarray(loaded(x, training=False)),
        np.asarray(model(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("key", sorted(FAMILY_MODELS))
def test_family_forward_gradients_and_round_trips(key, tmp_path):
    check_model(FAMILY_MODELS[key](), tmp_path)


def test_registry_metadata_and_min_input():
    for name, family, min_input in [
        ("alexnet", "alexnet", 63),
        ("vgg16_bn", "vgg", 32),
        ("resnet50", "resnet", 32),
        ("resnet56", "resnet_cifar", 8),
        ("wrn_28_10", "wide_resnet", 8),
        ("densenet121", "densenet", 32),
        ("googlenet", "googlenet", 32),
    ]:
        entry = get_entry(name)
        assert entry.family == family and entry.min_input == min_input
        assert entry.paper and entry.year
    # AlexNet's three valid 3x3/2 pools need at least 63 pixels: 62 leaves an empty map.
    AlexNet(3, (63, 63, 3), fc_units=8)
    with pytest.raises(ValueError):
        AlexNet(3, (62, 62, 3), fc_units=8)


# ---------------------------------------------------------------------------------------------
# GoogLeNet auxiliary classifiers


def test_googlenet_aux_loss_predict_and_fit(tmp_path):
    model = GoogLeNet(3, (32, 32, 3), aux_logits=True)
    check_model(model, tmp_path)
    x = np.random.default_rng(1).normal(size=(6, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0, 1, 2], 3)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01), loss_fn, metrics=["accuracy"], run_eagerly=True)

    main, aux1, aux2 = model(x, training=True)
    total = model.compute_loss(x, y, (main, aux1, aux2))
    expected = loss_fn(y, main) + 0.3 * (loss_fn(y, aux1) + loss_fn(y, aux2))
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)

    pred = model.predict(x, verbose=0)
    assert isinstance(pred, np.ndarray) and pred.shape == (6, 3)
    aux_before = [np.array(w) for w in model.get_layer("aux1").trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=6, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    aux_after = model.get_layer("aux1").trainable_weights
    assert any(not np.allclose(a, b) for a, b in zip(aux_before, aux_after, strict=True))
    loss, acc = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(loss, float(loss_fn(y, model.predict(x, verbose=0))), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Pooling, padding and LRN against NumPy


def adaptive_avg_pool_reference(x, out):
    """PyTorch AdaptiveAvgPool2d: bin i spans [floor(i H / out), ceil((i + 1) H / out))."""
    b, h, w, c = x.shape
    y = np.zeros((b, out, out, c))
    for i in range(out):
        h0, h1 = (i * h) // out, math.ceil((i + 1) * h / out)
        for j in range(out):
            w0, w1 = (j * w) // out, math.ceil((j + 1) * w / out)
            y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("size,out", [(13, 6), (5, 6), (7, 7), (10, 7), (1, 6), (14, 4), (3, 7)])
def test_adaptive_average_pooling_matches_pytorch_bins(size, out):
    x = np.random.default_rng(size).normal(size=(2, size, size + 2, 3)).astype("float32")
    layer = AdaptiveAveragePooling2D(out)
    ref = adaptive_avg_pool_reference(x, out)
    np.testing.assert_allclose(np.asarray(layer(x)), ref, rtol=1e-5, atol=1e-6)
    graph = tf.function(lambda t: layer(t))  # the graph path (fit/predict), where keras' fails
    np.testing.assert_allclose(np.asarray(graph(x)), ref, rtol=1e-5, atol=1e-6)


def max_pool_reference(x, k, s, p, ceil_mode):
    """PyTorch MaxPool2d on NHWC, written out loop by loop."""
    b, h, w, c = x.shape

    def out_size(n):
        if ceil_mode:
            o = math.ceil((n + 2 * p - k) / s) + 1
            return o - 1 if (o - 1) * s >= n + p else o
        return (n + 2 * p - k) // s + 1

    oh, ow = out_size(h), out_size(w)
    y = np.full((b, oh, ow, c), -np.inf)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - p, j * s - p
            rows = slice(max(r0, 0), min(r0 + k, h))
            cols = slice(max(c0, 0), min(c0 + k, w))
            y[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return y


@pytest.mark.parametrize(
    "size,k,s,p,ceil_mode",
    [
        (112, 3, 2, 1, False),
        (9, 3, 2, 1, False),
        (14, 3, 2, 0, True),
        (13, 3, 2, 0, True),
        (7, 2, 2, 0, True),
        (10, 3, 1, 1, True),
    ],
)
def test_padded_max_pooling_matches_pytorch(size, k, s, p, ceil_mode):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32") - 5.0
    layer = PaddedMaxPooling2D(k, strides=s, padding=p, ceil_mode=ceil_mode)
    y = np.asarray(layer(x))
    ref = max_pool_reference(x, k, s, p, ceil_mode)
    np.testing.assert_allclose(y, ref)
    assert tuple(layer.compute_output_shape(x.shape)) == ref.shape


@pytest.mark.parametrize(
    "size,k,s,p,ceil_mode,same",
    [
        (112, 3, 2, 0, True, True),
        (28, 3, 2, 0, True, True),
        (9, 3, 2, 1, False, True),
        (112, 3, 2, 1, False, False),
        (8, 2, 2, 1, False, False),
    ],
)
def test_padded_max_pooling_same_shortcut_has_the_padded_gradient(size, k, s, p, ceil_mode, same):
    """Where TF's "same" padding gives the PyTorch windows (GoogLeNet's ceil-mode pools on even
    sizes) no Pad op runs, and values and gradients equal the explicit -inf pad's."""
    import tensorflow as tf

    layer = PaddedMaxPooling2D(k, strides=s, padding=p, ceil_mode=ceil_mode)
    x = tf.constant(np.random.default_rng(size).normal(size=(2, size, size, 4)), tf.float32)
    (top, bottom), (left, right) = layer._pads(size), layer._pads(size)

    def explicit(v):
        v = tf.pad(v, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=-np.inf)
        return tf.nn.max_pool2d(v, k, s, "VALID")

    w = tf.constant(np.random.default_rng(1).normal(size=explicit(x).shape), tf.float32)
    grads = []
    for f in (layer, explicit):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
            loss = tf.reduce_sum(y * w)
        grads.append((y.numpy(), tape.gradient(loss, x).numpy()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])
    graph = tf.function(layer).get_concrete_function(x).graph
    ops_run = {op.type for op in graph.get_operations()}
    assert ("PadV2" not in ops_run) == same, ops_run


def test_padded_conv_is_symmetric_zero_padding():
    x = np.random.default_rng(0).normal(size=(1, 10, 10, 3)).astype("float32")
    conv = PaddedConv2D(4, 3, pad=1, strides=2)
    y = np.asarray(conv(x))
    kernel, bias = (np.asarray(v) for v in conv.weights)
    xp = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    ref = np.zeros((1, 5, 5, 4))
    for i in range(5):
        for j in range(5):
            patch = xp[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            ref[0, i, j] = np.tensordot(patch, kernel, axes=3) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_local_response_normalization_matches_paper_formula():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype("float32") * 30
    layer = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, k=2.0)
    y = np.asarray(layer(x))
    ref = np.zeros_like(x, dtype=np.float64)
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        ref[..., c] = x[..., c] / (2.0 + 1e-4 * (x[..., lo:hi] ** 2).sum(-1)) ** 0.75
    np.testing.assert_allclose(y, ref, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Blocks


BLOCKS = [
    (BasicBlock(8, strides=2, shortcut="projection", activation="leaky_relu"), 4),
    (BasicBlock(8, strides=2, shortcut="zero_pad"), 4),
    (Bottleneck(4, strides=2, shortcut="projection", groups=2, width_per_group=32), 8),
    (PreActBlock(8, strides=2, projection=True, activate_before_residual=True, dropout=0.2), 4),
    (InceptionModule(4, 4, 8, 2, 4, 4, branch3_kernel=5), 6),
    (InceptionAux(5, norm="instance"), 6),
    (ConvNormAct(6, 7, strides=2, norm="layer"), 3),
    (DenseLayer(4, bn_size=2), 6),
    (DenseBlock(3, growth_rate=4, bn_size=2), 6),
    (Transition(3), 6),
    (LocalResponseNormalization(size=3), 6),
    (PaddedMaxPooling2D(3, strides=2, ceil_mode=True), 6),
    (PaddedConv2D(5, 7, pad=3, strides=2, use_bias=False), 3),
    (AdaptiveAveragePooling2D((3, 5)), 4),
]


@pytest.mark.parametrize("block,channels", BLOCKS, ids=lambda b: getattr(b, "name", str(b)))
def test_block_config_round_trip(block, channels):
    x = np.random.default_rng(0).normal(size=(2, 8, 8, channels)).astype("float32")
    y = np.asarray(block(x))
    clone = block.__class__.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    clone(x)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), y, rtol=1e-5, atol=1e-6)


def test_bottleneck_is_v1_5_and_resnext_width():
    block = Bottleneck(64, strides=2, shortcut="projection", groups=32, width_per_group=4)
    block(np.zeros((1, 8, 8, 256), "float32"))
    assert block.conv1.strides == (1, 1) and block.conv2.strides == (2, 2)  # stride on the 3x3
    assert block.width == 128 and block.conv2.groups == 32  # int(64 * 4 / 64) * 32
    assert block.conv3.filters == 256
    zero = Bottleneck(8, shortcut="projection", zero_init_residual=True)
    zero(np.zeros((1, 4, 4, 8), "float32"))
    assert not np.any(np.asarray(zero.norm3.gamma)) and np.all(np.asarray(zero.norm2.gamma) == 1)


def test_convolutions_get_a_bias_only_without_norm():
    with_bn = BasicBlock(8, shortcut="projection")
    without = BasicBlock(8, shortcut="projection", norm="none")
    for block in (with_bn, without):
        block(np.zeros((1, 4, 4, 4), "float32"))
    assert not with_bn.conv1.use_bias and not with_bn.downsample_conv.use_bias
    assert without.conv1.use_bias and without.downsample_conv.use_bias
    assert ConvNormAct(4, norm="none").conv.use_bias


def test_identity_shortcut_rejects_shape_change():
    with pytest.raises(ValueError, match="identity shortcut"):
        BasicBlock(16, strides=2)(np.zeros((1, 8, 8, 16), "float32"))
    with pytest.raises(ValueError, match="identity shortcut"):
        PreActBlock(32)(np.zeros((1, 8, 8, 16), "float32"))


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = np.arange(2 * 4 * 4 * 16, dtype="float32").reshape(2, 4, 4, 16)
    y = np.asarray(zero_pad_shortcut(x, 32, 2))
    assert y.shape == (2, 2, 2, 32)
    np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    assert not y[..., :8].any() and not y[..., 24:].any()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("size", [5, 7, 8])
def test_option_a_subsampling_equals_the_strided_slice_with_its_gradient(dtype, size):
    """The 1x1 average pool stands in for ``x[:, ::2, ::2]``: same values and gradient."""
    import tensorflow as tf

    rng = np.random.default_rng(size)
    x = tf.cast(rng.normal(size=(2, size, size, 4)).astype("float32"), dtype)
    w = tf.cast(rng.normal(size=(2, (size + 1) // 2, (size + 1) // 2, 8)), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got = zero_pad_shortcut(x, 8, 2)
        want = tf.pad(x[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [2, 2]])
        loss_got, loss_want = tf.reduce_sum(got * w), tf.reduce_sum(want * w)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, "float32"), np.asarray(want, "float32"))
    np.testing.assert_array_equal(
        np.asarray(tape.gradient(loss_got, x), "float32"),
        np.asarray(tape.gradient(loss_want, x), "float32"),
    )


def test_preact_block_computes_the_reference_formula():
    """x' + conv2(act(bn2(conv1(act(bn1(x)))))) with the shortcut fed the raw input."""
    block = PreActBlock(4, strides=1, projection=True, activation="relu")
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype("float32")
    y = np.asarray(block(x, training=False))
    h = np.maximum(np.asarray(block.norm1(x, training=False)), 0)
    z = np.maximum(np.asarray(block.norm2(block.conv1(h), training=False)), 0)
    ref = np.asarray(block.conv2(z)) + np.asarray(block.shortcut_conv(x))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_vgg_bn_keeps_conv_bias_and_models_accept_other_sizes():
    model = VGG(3, (40, 48, 3), depths=[1, 1, 1, 1, 1], norm="batch", fc_units=16)
    assert model.get_layer("stage1_conv1").use_bias
    assert tuple(model(np.zeros((1, 40, 48, 3), "float32")).shape) == (1, 3)
    cifar = CifarResNet(3, (20, 20, 3), depth=8)
    assert tuple(cifar(np.zeros((1, 20, 20, 3), "float32")).shape) == (1, 3)


def test_resnet_cifar_stem_keeps_the_resolution():
    """SimCLR's CIFAR ResNet (Chen et al. 2020, appendix B.9): a 3x3/1 first convolution and no
    max-pool; only conv1 differs from torchvision's ResNet-50 (3x3 instead of 7x7 kernels)."""
    from kerasdl import create_model
    from kerasdl.models.resnet import ResNet

    cifar = create_model("resnet50", num_classes=10, input_shape=(32, 32, 3), stem="cifar")
    imagenet = create_model("resnet50", num_classes=10, input_shape=(32, 32, 3))
    assert "maxpool" not in [layer.name for layer in cifar.layers]
    assert cifar.count_params() == imagenet.count_params() - 64 * 3 * (7 * 7 - 3 * 3)
    assert cifar.get_layer("layer4_2").output.shape[1:3] == (4, 4)  # 32 / 8
    assert imagenet.get_layer("layer4_2").output.shape[1:3] == (1, 1)  # 32 / 32
    assert [r for _, r in cifar.feature_stages()] == [1, 1, 2, 4, 8]
    assert ResNet.from_config(cifar.get_config()).stem == "cifar"
    with pytest.raises(ValueError, match="stem must be one of"):
        create_model("resnet18", stem="tiny")
