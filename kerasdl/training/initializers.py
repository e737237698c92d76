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
or ``fan_out`` (preserves the variance of gradients in the backward pass), as in He et al. For a
convolution kernel ``(kh, kw, c_in, c_out)``, ``fan_in = kh kw c_in`` and
``fan_out = kh kw c_out``. Glorot's rule averages both fans, so it takes no mode.

The normal variants are Keras's truncated normals (cut at two standard deviations, rescaled by
1/0.87962566 so the variance is exactly the target), as in TensorFlow, Keras and timm; the
uniform variants are exact. Each name maps to a ``keras.initializers.VarianceScaling``.

References:
    He, Zhang, Ren & Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
    ImageNet Classification", ICCV 2015. Glorot & Bengio, "Understanding the difficulty of
    training deep feedforward neural networks", AISTATS 2010.
"""

from __future__ import annotations

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


def apply_initializer(
    model: keras.Model, name: str, mode: str = "fan_in", seed: int | None = None
) -> int:
    """Re-initialize every kernel of a built model with a named scheme; biases are untouched.

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
    init = get_initializer(name, mode, keras.random.SeedGenerator(seed))
    kernels = kernel_variables(model)
    for var in kernels:
        var.assign(keras.ops.cast(init(tuple(var.shape), dtype="float32"), var.dtype))
    return len(kernels)
