"""Multiply-accumulate (MAC) counts of built Keras models, from their layers.

One forward pass at batch size 1 is traced (not executed, on the TensorFlow backend) while every
counted layer, at any nesting depth, records its input and output shapes. Then:

* ``Conv1D/2D/3D`` (any ``groups``) and ``DepthwiseConv2D``: output positions x kernel size
  (``H_out W_out x k_h k_w C_in/groups C_out``; depthwise ``H_out W_out x k_h k_w C``);
  ``Conv2DTranspose``: input positions x kernel size; ``SeparableConv2D``: its depthwise and
  pointwise parts.
* ``Dense`` (also on sequences): positions x ``in x out``; ``EinsumDense`` (the projections inside
  ``MultiHeadAttention``): output elements x contracted kernel size.
* ``MultiHeadAttention``: besides its projections, the two attention products
  ``QK^T`` (``heads x N_q x N_k x key_dim``) and ``AV`` (``heads x N_q x N_k x value_dim``).

Not counted: biases, batch/layer normalization, activations, softmax, pooling, element-wise
additions and multiplications (residuals, squeeze-excitation gating), resizing, padding. This is
the convention of the GMACs ("GFLOPS") column of torchvision's model table, e.g. ResNet-50 4.09,
ViT-B/16 17.56, EfficientNet-B0 0.39.
"""

from __future__ import annotations

import math
from typing import Any

import keras

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_COUNTED = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.MultiHeadAttention,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    *_CONV,
)


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _prod(values) -> int:
    return int(math.prod(values))


def layer_macs(layer: keras.layers.Layer, in_shapes: list[tuple], out_shape: tuple) -> int:
    """MACs of one call of ``layer`` with batch size 1 (see the module docstring)."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        q, v = in_shapes[0], in_shapes[1]
        nq, nk = _prod(q[1:-1]), _prod(v[1:-1])
        heads = layer.num_heads
        key_dim = layer.key_dim
        value_dim = layer.value_dim or key_dim
        return heads * nq * nk * (key_dim + value_dim)  # QK^T and AV
    if isinstance(layer, keras.layers.EinsumDense):
        inputs, rest = layer.equation.split(",")
        kernel_axes, out_axes = rest.split("->")
        kshape = _shape(layer.kernel)
        contracted = _prod(d for a, d in zip(kernel_axes, kshape, strict=True) if a not in out_axes)
        return _prod(out_shape[1:]) * contracted
    if isinstance(layer, keras.layers.Dense):
        return _prod(out_shape[1:-1]) * _prod(_shape(layer.kernel))
    if isinstance(layer, keras.layers.SeparableConv2D):
        dw = _prod(_shape(layer.depthwise_kernel))
        pw = _prod(_shape(layer.pointwise_kernel))
        return _prod(out_shape[1:-1]) * (dw + pw)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return _prod(in_shapes[0][1:-1]) * _prod(_shape(layer.kernel))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _prod(out_shape[1:-1]) * _prod(_shape(layer.kernel))
    if isinstance(layer, _CONV):
        return _prod(out_shape[1:-1]) * _prod(_shape(layer.kernel))
    return 0


def _kind(layer: keras.layers.Layer) -> str:
    """The counted layer's kind: attention layers (kerasdl's fused self-attention included) as
    ``MultiHeadAttention``, others by class."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return "MultiHeadAttention"
    return type(layer).__name__


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def macs_by_layer(model: keras.Model) -> list[tuple[str, str, int]]:
    """``(layer path, layer class, MACs)`` for every counted layer call, batch size 1.

    Example:
        >>> rows = macs_by_layer(create_model("resnet18"))
    """
    records: list[tuple[str, str, int]] = []
    patched = []
    for layer in _all_layers(model):
        if not isinstance(layer, _COUNTED) or "call" in layer.__dict__:
            continue

        def wrapped(*args, __layer=layer, __call=layer.call, **kwargs):
            out = __call(*args, **kwargs)
            tensors = [a for a in args if hasattr(a, "shape")]
            main = out[0] if isinstance(out, tuple | list) else out
            shapes = [_shape(t) for t in tensors]
            if isinstance(__layer, keras.layers.MultiHeadAttention) and len(shapes) == 1:
                shapes.append(_shape(kwargs.get("value", tensors[0])))
            records.append(
                (__layer.path, _kind(__layer), layer_macs(__layer, shapes, _shape(main)))
            )
            return out

        layer.call = wrapped
        patched.append(layer)
    try:
        _trace(model)
    finally:
        for layer in patched:
            del layer.call
    return records


def _trace(model: keras.Model) -> None:
    shape = (1, *model.inputs[0].shape[1:])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec(shape, model.inputs[0].dtype)
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    else:  # other backends: a real forward pass
        model(keras.ops.zeros(shape, model.inputs[0].dtype), training=False)


def count_macs(model: keras.Model) -> int:
    """Total multiply-accumulates of one forward pass of ``model`` for one input.

    Example:
        >>> count_macs(create_model("resnet50")) / 1e9  # about 4.09
    """
    return sum(m for _, _, m in macs_by_layer(model))


def summarize_macs(model: keras.Model) -> dict[str, Any]:
    """MACs per layer class and in total (a quick profile)."""
    totals: dict[str, int] = {}
    for _, kind, m in macs_by_layer(model):
        totals[kind] = totals.get(kind, 0) + m
    return {"total": sum(totals.values()), "by_type": totals}
