"""TrivialAugment Wide for batches of images in [0, 1], inside ``tf.data`` (graph mode).

Per image: one operation drawn uniformly from 14 (identity included), one magnitude drawn
uniformly from ``num_magnitude_bins`` evenly spaced values of the operation's range, and for a
signed operation a sign drawn with probability 1/2. No tuning: this is the whole method. The
ranges are the *wide* augmentation space of the paper, as torchvision's ``TrivialAugmentWide``
(``transforms/autoaugment.py``, 31 bins) spells them:

* ShearX / ShearY: shear factor ``0.99 k / (n - 1)``, signed;
* TranslateX / TranslateY: ``int(32 k / (n - 1))`` pixels, signed;
* Rotate: ``135 k / (n - 1)`` degrees, signed;
* Brightness, Color, Contrast, Sharpness: enhance factor ``1 + 0.99 k / (n - 1)``, signed
  (1 = unchanged);
* Posterize: keep ``8 - round(6 k / (n - 1))`` bits;
* Solarize: invert the levels ``>= 255 (1 - k / (n - 1))``;
* Identity, AutoContrast, Equalize: no magnitude.

Geometric operations keep the AutoAugment code's (PIL's) direction for a given sign, the mirror of
torchvision's; the sign is drawn with probability 1/2, so the distribution is the same.
Translations are in pixels whatever the image size (torchvision's, 32 px being the CIFAR side the
paper tuned on). The operations themselves are kerasdl's AutoAugment ones
(:mod:`kerasdl.data.augment_policies`): PIL's and torchvision's formulas on [0, 1] floats.

Reference:
    Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation",
    ICCV 2021 (section 3 and the wide space of table 2); torchvision's ``TrivialAugmentWide``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasdl.data.augment_policies import OPS, apply_values

# torchvision's order (``_augmentation_space``); the draw is uniform, so the order only matters
# for replaying a seed.
WIDE_OPS: tuple[str, ...] = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
_SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")


def _is(op_index: tf.Tensor, names: tuple[str, ...]) -> tf.Tensor:
    return tf.reduce_any(tf.stack([op_index == OPS.index(n) for n in names]), axis=0)


def _linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace`` in float32, bit for bit (ATen fills the first half from ``start`` and
    the second from ``end``), so that ``int()`` of a translation truncates as torchvision's."""
    step = np.float64(np.float32((end - start) / (steps - 1)))  # a float32 step, fused products
    i = np.arange(steps, dtype=np.float64)
    first = np.float32(start) + step * i
    second = np.float32(end) - step * (steps - i - 1)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def magnitude_table(num_bins: int) -> np.ndarray:
    """``(len(OPS), num_bins)`` float32: torchvision's ``_augmentation_space`` magnitudes of each
    operation at each bin (0 for the operations without one)."""
    table = np.zeros((len(OPS), num_bins), np.float32)
    for name, top in (("ShearX", 0.99), ("ShearY", 0.99), ("TranslateX", 32.0)):
        table[OPS.index(name)] = _linspace(0.0, top, num_bins)
    table[OPS.index("TranslateY")] = _linspace(0.0, 32.0, num_bins)
    table[OPS.index("Rotate")] = _linspace(0.0, 135.0, num_bins)
    for name in _ENHANCE:
        table[OPS.index(name)] = _linspace(0.0, 0.99, num_bins)
    bins = np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / 6)
    table[OPS.index("Posterize")] = 8 - np.round(bins)  # round half to even, as torch
    table[OPS.index("Solarize")] = _linspace(255.0, 0.0, num_bins)
    return table


def wide_values(
    op_index: tf.Tensor, bin_index: tf.Tensor, sign: tf.Tensor, num_bins: int
) -> tf.Tensor:
    """The argument of each image's operation (see ``apply_values``) at its magnitude bin, as
    torchvision's ``_apply_op`` uses the magnitude.

    Args:
        op_index: ``(B,)`` int32 indices into ``OPS``.
        bin_index: ``(B,)`` int32 bins in ``[0, num_bins)``.
        sign: ``(B,)`` float32 of +-1 (used by the signed operations).
        num_bins: n, the number of magnitude bins.
    """
    table = tf.constant(magnitude_table(num_bins))
    magnitude = tf.gather_nd(table, tf.stack([op_index, bin_index], axis=1)) * sign
    is_translate = _is(op_index, ("TranslateX", "TranslateY"))
    value = tf.where(is_translate, tf.sign(magnitude) * tf.floor(tf.abs(magnitude)), magnitude)
    value = tf.where(_is(op_index, _ENHANCE), 1.0 + magnitude, value)
    return tf.where(op_index == OPS.index("Solarize"), magnitude / 255.0, value)


def trivial_augment_wide(
    x: tf.Tensor,
    gen: tf.random.Generator,
    num_magnitude_bins: int = 31,
    interpolation: str = "nearest",
    fill: float = 0.0,
) -> tf.Tensor:
    """TrivialAugment Wide: per image, one uniformly drawn operation at a uniformly drawn
    magnitude bin (see the module docstring for the ranges).

    Args:
        x: ``(B, H, W, C)`` float32 in [0, 1].
        gen: the random generator.
        num_magnitude_bins: magnitude bins per operation (torchvision: 31).
        interpolation: ``"nearest"`` (torchvision's default) or ``"bilinear"`` (its ImageNet
            recipe's) for the geometric operations.
        fill: the value of uncovered areas (torchvision: 0, black).

    Example:
        >>> out = trivial_augment_wide(images, tf.random.Generator.from_seed(0))
    """
    if num_magnitude_bins < 2:
        raise ValueError(f"num_magnitude_bins must be >= 2. Received: {num_magnitude_bins}")
    n = tf.shape(x)[0]
    index = tf.constant([OPS.index(op) for op in WIDE_OPS], tf.int32)
    op = tf.gather(index, gen.uniform((n,), maxval=len(WIDE_OPS), dtype=tf.int32))
    bin_index = gen.uniform((n,), maxval=num_magnitude_bins, dtype=tf.int32)
    sign = tf.where(gen.uniform((n,)) < 0.5, -1.0, 1.0)
    signed = _is(op, _SIGNED + _ENHANCE)
    value = wide_values(op, bin_index, tf.where(signed, sign, 1.0), num_magnitude_bins)
    return apply_values(x, op, value, set(WIDE_OPS), fill, interpolation.upper())
