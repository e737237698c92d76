"""timm's RandAugment (``rand-m9-mstd0.5-inc1`` and the other ``rand-...`` strings), per image, in
``tf.data`` graph mode on images in [0, 1].

timm's variant differs from the paper's (``randaugment`` in kerasdl.data.augment_policies) in
ways that matter for the recipes that use it (DeiT, many timm ImageNet recipes):

* each of the ``n`` operations (drawn uniformly with replacement from 15) is applied with
  probability ``p`` (default 0.5);
* the magnitude of each application is drawn from N(m, mstd) when ``mstd > 0`` (uniform on
  [0, m] when mstd > 100), then clipped to [0, mmax] (default 10);
* ``inc1`` uses the operations whose strength increases with the magnitude (posterize keeps
  ``4 - int(4 m / 10)`` bits, solarize inverts from ``256 - int(256 m / 10)``, the enhancements
  move by ``0.9 m / 10`` either way from 1, never below 0.1); otherwise the original ones;
* its vocabulary has Invert and SolarizeAdd (``+int(110 m / 10)`` below grey 128) and no
  identity; translations are ``0.45 m / 10`` of the side; rotations 30 m / 10 degrees, shears
  0.3 m / 10, both with a random sign;
* uncovered areas are filled with the data's mean colour (timm's ``img_mean``).

All argument formulas are timm's ``LEVEL_TO_ARG`` (``timm/data/auto_augment.py``); the image
operations are kerasdl's PIL-faithful ones. Geometric operations interpolate bilinearly (timm's
DeiT transform: bicubic; TensorFlow's projective transform has no bicubic mode).

Reference:
    Wightman, PyTorch Image Models: ``timm/data/auto_augment.py`` (``rand_augment_transform``);
    Touvron et al., "Training data-efficient image transformers & distillation through
    attention", ICML 2021 (DeiT: ``rand-m9-mstd0.5-inc1``); Cubuk et al., "RandAugment", CVPR
    Workshops 2020.
"""

from __future__ import annotations

import math

import tensorflow as tf

from kerasdl.data.augment_policies import OPS, apply_values
from kerasdl.data.timm_config import LEVEL_DENOM, RandAugmentConfig, parse_config

__all__ = ["TRANSFORMS", "level_values", "parse_config", "timm_randaugment"]
# timm's _RAND_TRANSFORMS / _RAND_INCREASING_TRANSFORMS, as kerasdl operations; TranslateX/Y are
# timm's TranslateXRel/YRel (a fraction of the side)
TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)
_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")
_SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _is(op: tf.Tensor, names: tuple[str, ...]) -> tf.Tensor:
    return tf.reduce_any(tf.stack([op == OPS.index(n) for n in names]), axis=0)


def level_values(
    op: tf.Tensor,
    level: tf.Tensor,
    sign: tf.Tensor,
    increasing: bool,
    h: tf.Tensor,
    w: tf.Tensor,
    translate_pct: float = 0.45,
) -> tf.Tensor:
    """timm's ``LEVEL_TO_ARG`` for each image's operation at ``level`` (0 to mmax), as the
    argument :func:`~kerasdl.data.augment_policies.apply_values` takes."""
    frac = level / LEVEL_DENOM
    side = tf.where(op == OPS.index("TranslateY"), tf.cast(h, tf.float32), tf.cast(w, tf.float32))
    geometric = tf.gather(tf.constant([_GEO_SCALE.get(n, 0.0) for n in OPS]), op) * frac
    value = tf.where(_is(op, ("TranslateX", "TranslateY")), translate_pct * frac * side, geometric)
    value = value * sign
    if increasing:
        enhance = tf.maximum(0.1, 1.0 + sign * 0.9 * frac)
        bits = 4.0 - tf.floor(frac * 4.0)
        threshold = 256.0 - tf.minimum(256.0, tf.floor(frac * 256.0))
    else:
        enhance = frac * 1.8 + 0.1
        bits = tf.floor(frac * 4.0)
        threshold = tf.minimum(256.0, tf.floor(frac * 256.0))
    value = tf.where(_is(op, _ENHANCE), enhance, value)
    value = tf.where(op == OPS.index("Posterize"), bits, value)
    value = tf.where(op == OPS.index("Solarize"), threshold / 255.0, value)
    add = tf.minimum(128.0, tf.floor(frac * 110.0)) / 255.0
    return tf.where(op == OPS.index("SolarizeAdd"), add, value)


_GEO_SCALE = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3}


def timm_randaugment(
    x: tf.Tensor,
    gen: tf.random.Generator,
    config: RandAugmentConfig,
    fill: float | tuple[float, ...] = 0.5,
    translate_pct: float = 0.45,
) -> tf.Tensor:
    """timm's RandAugment on a batch, every image with its own draws.

    Args:
        x: ``(B, H, W, C)`` float32 in [0, 1].
        gen: the random generator.
        config: :func:`parse_config`'s output.
        fill: the fill of uncovered areas, one value or one per channel (timm: the data's mean).
        translate_pct: the largest translation, a fraction of the side (timm: 0.45).

    Example:
        >>> out = timm_randaugment(images, gen, parse_config("rand-m9-mstd0.5-inc1"))
    """
    n = tf.shape(x)[0]
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    index = tf.constant([OPS.index(op) for op in TRANSFORMS], tf.int32)
    for _ in range(config.num_ops):
        op = tf.gather(index, gen.uniform((n,), maxval=len(TRANSFORMS), dtype=tf.int32))
        if config.prob < 1.0:
            op = tf.where(gen.uniform((n,)) < config.prob, op, OPS.index("Identity"))
        level = tf.fill((n,), float(config.magnitude))
        if math.isinf(config.magnitude_std):
            level = gen.uniform((n,), 0.0, float(config.magnitude))
        elif config.magnitude_std > 0:
            level = level + config.magnitude_std * gen.normal((n,))
        level = tf.clip_by_value(level, 0.0, float(config.magnitude_max))
        sign = tf.where(gen.uniform((n,)) < 0.5, -1.0, 1.0)
        value = level_values(op, level, sign, config.increasing, h, w, translate_pct)
        x = apply_values(x, op, value, set(TRANSFORMS), fill)
    return x
