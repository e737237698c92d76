"""MAC counting against hand computations and torchvision's published figures.

(ViT-B/16 and EfficientNet-B0 figures are checked in their model test files, on the models they
already build.)"""

from __future__ import annotations

import keras
import pytest

from kerasdl import create_model
from kerasdl.layers.mbconv import MBConv
from kerasdl.layers.transformer import TransformerEncoderBlock
from kerasdl.models.macs import count_macs, macs_by_layer, summarize_macs


def _model(input_shape, *layers):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_conv_groups_depthwise_dense_by_hand():
    model = _model(
        (8, 8, 4),
        keras.layers.Conv2D(6, 3, padding="same"),  # 8*8 * 3*3*4*6 = 13,824
        keras.layers.BatchNormalization(),  # not counted
        keras.layers.Conv2D(6, 3, strides=2, groups=2),  # 3*3 * 3*3*3*6 = 1,458
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),  # 3*3 * 3*3*6*2 = 972
        keras.layers.MaxPooling2D(),  # not counted
        keras.layers.Flatten(),
        keras.layers.Dense(5),  # 12 * 5 = 60
    )
    rows = macs_by_layer(model)
    assert [m for _, _, m in rows] == [13_824, 1_458, 972, 60]
    assert count_macs(model) == 16_314


def test_separable_transpose_and_dense_on_sequences():
    model = _model(
        (4, 4, 3),
        keras.layers.SeparableConv2D(8, 3, padding="same"),  # 16 * (3*3*3 + 3*8) = 816
        keras.layers.Conv2DTranspose(2, 2, strides=2),  # 16 input positions * 2*2*8*2 = 1,024
        keras.layers.Reshape((64, 2)),
        keras.layers.Dense(3),  # 64 * 2*3 = 384
    )
    assert count_macs(model) == 816 + 1_024 + 384


def test_attention_counts_projections_and_products():
    n, d, heads, mlp = 10, 16, 4, 32
    model = _model((n, d), TransformerEncoderBlock(heads, mlp))
    by_type = summarize_macs(model)["by_type"]
    assert by_type["EinsumDense"] == 4 * n * d * d  # Q, K, V, output projections
    assert by_type["MultiHeadAttention"] == 2 * heads * n * n * (d // heads)  # QK^T and AV
    assert by_type["Dense"] == 2 * n * d * mlp  # the MLP


def test_nested_blocks_are_walked():
    block = MBConv(8, 8, expand_ratio=2, kernel_size=3, stride=1)
    model = _model((4, 4, 8), block)
    hw = 16
    expected = hw * 8 * 16 + hw * 9 * 16 + (16 * 2 + 2 * 16) + hw * 16 * 8  # SE at 1x1
    assert count_macs(model) == expected
    # Patching is undone: the block's layers call their own methods again.
    assert all("call" not in layer.__dict__ for layer in model._flatten_layers())


def test_resnet50_matches_torchvision():
    model = create_model("resnet50")
    assert count_macs(model) / 1e9 == pytest.approx(4.09, rel=0.02)
