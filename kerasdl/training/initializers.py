"""Weight initialization by name: He (Kaiming) and Xavier (Glorot), normal or uniform.

=================  ==============================  ==============================================
name               distribution of each weight     reference
=================  ==============================  ==============================================
he_normal          N(0, 2 / fan)  (truncated)      He et al. 2015, eq. 10 (fan_in) / eq. 14
he_uniform         U(-sqrt(6/fan), sqrt(6/fan))    (fan_out); same variance 2 / fan
glorot_normal      N(0, 2 / (fan_in + fan_out))    Glorot & Bengio 2010, eq. 12 ("normalized
glorot_uniform     U(-sqrt(6/(fi+fo)), +...)       initialization"); same variance
=================  ==============================  ==============================================

``xavier_normal`` / ``xavier_uniform`` and ``kaiming_normal`` / ``kaiming_uniform`` are aliases.
``fan`` is ``fan_in`` (the default; preserves the variance of activations in the forward pass)
or ``fan_out`` (preserves the variance of gradients in the backward pass), as in He et al. Glorot's
rule averages both fans, so it takes no mode. :func:`apply_initializer` takes the fans of each
kernel from its layer, as PyTorch's ``_calculate_fan_in_and_fan_out`` does for the equivalent
PyTorch weight (``receptive field = kh kw``):

=======================================  =========================  ===========================
kernel (Keras shape)                     fan_in                     fan_out
=======================================  =========================  ===========================
Dense ``(c_in, c_out)``                  ``c_in``                   ``c_out``
Conv ``(kh, kw, c_in / groups, c_out)``  ``kh kw c_in / groups``    ``kh kw c_out``
Depthwise ``(kh, kw, c, mult)``          ``kh kw``                  ``kh kw c mult``
EinsumDense (attention projections)      contracted kernel dims     output dims of the kernel
=======================================  =========================  ===========================

A depthwise convolution is a convolution with ``groups = c``: each output channel sees
``kh kw`` inputs (Keras's own shape rule would say ``kh kw c``, a variance ``c`` times too small).
An attention projection ``(d, heads, head_dim)`` is a ``d -> heads * head_dim`` linear map.

The normal variants are Keras's truncated normals (cut at two standard deviations, rescaled by
1/0.87962566 so the variance is exactly the target), as in TensorFlow, Keras and timm; the
uniform variants are exact. :func:`get_initializer` maps each name to a
``keras.initializers.VarianceScaling`` (fans from the shape alone, Keras's rule).

References:
    He, Zhang, Ren & Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
    ImageNet Classification", ICCV 2015. Glorot & Bengio, "Understanding the difficulty of
    training deep feedforward neural networks", AISTATS 2010.
"""

from __future__ import annotations

import math

import keras

from kerasdl.errors import UserError

# name -> (VarianceScaling scale, distribution, uses mode)
_SCHEMES: dict[str, tuple[float, str, bool]] = {
    "he_normal": (2.0, "truncated_normal", True),
    "he_uniform": (2.0, "uniform", True),
    "glorot_normal": (1.0, "truncated_normal", False),
    "glorot_uniform": (1.0, "uniform", False),
}
ALIASES = {
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
    "xavier_normal": "glorot_normal",
    "xavier_uniform": "glorot_uniform",
}
NAMES = sorted([*_SCHEMES, *ALIASES])
MODES = ("fan_in", "fan_out")
KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")
# std of N(0, 1) cut at +-2 (keras.initializers.VarianceScaling's truncation constant)
TRUNCATION_STD = 0.87962566103423978


def get_initializer(
    name: str, mode: str = "fan_in", seed: int | keras.random.SeedGenerator | None = None
) -> keras.initializers.Initializer:
    """The Keras initializer for a scheme name.

    Args:
        name: ``he_normal``, ``he_uniform``, ``glorot_normal``, ``glorot_uniform`` (or the
            ``kaiming_*`` / ``xavier_*`` aliases).
        mode: ``fan_in`` or ``fan_out`` (He only; Glorot always uses the fan average).
        seed: an int (every call draws the same values) or a ``keras.random.SeedGenerator``
            (every call draws new values).

    Example:
        >>> init = get_initializer("he_normal", "fan_out")
        >>> w = init((3, 3, 16, 32))  # variance 2 / (3 * 3 * 32)
    """
    key = ALIASES.get(name, name)
    if key not in _SCHEMES:
        raise UserError(f"model.init.name: unknown initializer {name!r}. Expected one of: {NAMES}")
    if mode not in MODES:
        raise UserError(f"model.init.mode: expected one of {list(MODES)}. Received: {mode!r}")
    scale, distribution, uses_mode = _SCHEMES[key]
    return keras.initializers.VarianceScaling(
        scale=scale,
        mode=mode if uses_mode else "fan_avg",
        distribution=distribution,
        seed=seed,
    )


def kernel_variables(model: keras.Model) -> list[keras.Variable]:
    """The trainable kernels of ``model``: dense, convolution, depthwise and pointwise kernels
    (variables whose name is one of ``kernel``, ``depthwise_kernel``, ``pointwise_kernel``)."""
    return [w for w in model.trainable_weights if w.path.rsplit("/", 1)[-1] in KERNEL_ATTRS]


def _shape_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's (and PyTorch's) rule from the shape alone: ``receptive field x in / out``."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    rf = math.prod(shape[:-2])
    return int(shape[-2] * rf), int(shape[-1] * rf)


def _einsum_fans(equation: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """Fans of an ``EinsumDense`` kernel: the product of its dimensions summed over (fan_in) and
    of those it adds to the output (fan_out); dimensions shared by input and output count in
    neither (they index independent linear maps)."""
    lhs, out = equation.split("->")
    inp, ker = lhs.split(",")
    dims = dict(zip(ker, shape, strict=True))
    fan_in = math.prod(n for c, n in dims.items() if c in inp and c not in out)
    fan_out = math.prod(n for c, n in dims.items() if c in out and c not in inp)
    return int(fan_in), int(fan_out)


DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def kernel_fans(layer: keras.layers.Layer, var: keras.Variable) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of kernel ``var`` owned by ``layer``, as PyTorch counts them.

    Example:
        >>> dw = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
        >>> dw.build((None, 8, 8, 16))
        >>> kernel_fans(dw, dw.kernel)  # torch weight (32, 1, 3, 3)
        (9, 288)
    """
    shape = tuple(int(d) for d in var.shape)
    attr = var.path.rsplit("/", 1)[-1]
    depthwise = isinstance(layer, SEPARABLE) and attr != "pointwise_kernel"
    if depthwise or isinstance(layer, DEPTHWISE):
        rf = math.prod(shape[:-2])  # (*k, c, mult): groups = c, one input channel per group
        return int(rf), int(rf * shape[-2] * shape[-1])
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_fans(layer.equation, shape)
    return _shape_fans(shape)  # dense, (grouped) convolution, transposed convolution


def kernel_owners(model: keras.Model) -> dict[int, keras.layers.Layer]:
    """``id(variable) -> the innermost layer holding it`` for every weight of ``model``."""
    owners: dict[int, keras.layers.Layer] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for w in layer.weights:  # parents come first, so the innermost owner is written last
            owners[id(w)] = layer
    return owners


def apply_initializer(
    model: keras.Model, name: str, mode: str = "fan_in", seed: int | None = None
) -> int:
    """Re-initialize every kernel of a built model with a named scheme; biases are untouched.

    The fans of each kernel come from its layer (:func:`kernel_fans`): a depthwise kernel has
    ``fan_in = kh kw`` as in PyTorch and He et al., not Keras's shape-based ``kh kw c``.

    Args:
        model: a built model.
        name: the scheme (see :func:`get_initializer`).
        mode: ``fan_in`` or ``fan_out``.
        seed: random seed (each kernel gets its own draw).

    Returns:
        The number of kernels re-initialized.

    Example:
        >>> model = create_model("simple_cnn", num_classes=10, input_shape=(16, 16, 1))
        >>> apply_initializer(model, "he_normal", "fan_out")
    """
    get_initializer(name, mode)  # validates name and mode
    scale, distribution, uses_mode = _SCHEMES[ALIASES.get(name, name)]
    generator = keras.random.SeedGenerator(seed)
    owners = kernel_owners(model)
    kernels = kernel_variables(model)
    for var in kernels:
        fan_in, fan_out = kernel_fans(owners[id(var)], var)
        if not uses_mode:
            fan = (fan_in + fan_out) / 2.0
        else:
            fan = fan_in if mode == "fan_in" else fan_out
        variance = scale / max(1.0, fan)  # as keras.initializers.VarianceScaling
        shape = tuple(var.shape)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            value = keras.random.uniform(shape, -limit, limit, dtype="float32", seed=generator)
        else:  # cut at 2 std: rescale so the variance is exactly the target
            std = math.sqrt(variance) / TRUNCATION_STD
            value = keras.random.truncated_normal(shape, 0.0, std, dtype="float32", seed=generator)
        var.assign(keras.ops.cast(value, var.dtype))
    return len(kernels)
