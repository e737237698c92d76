"""AutoAugment and RandAugment for batches of images in [0, 1], inside ``tf.data`` (graph mode).

Both methods pick, per image, image operations from the same vocabulary (shear, translate,
rotate, auto-contrast, equalize, invert, solarize, posterize, colour, contrast, brightness,
sharpness) with a magnitude ``level`` on the papers' 0-10 scale. Every operation is computed for
the whole batch with a per-image magnitude and the chosen one is selected per image, so different
images of a batch get different operations (Keras' ``RandAugment`` layer picks one operation for
the whole batch and a random magnitude, which is not the paper's method; keras-cv has no
AutoAugment).

Level -> argument mapping (``level / 10`` of the paper's Table 1 range, as in the authors'
released code, ``PARAMETER_MAX = 10``):

==================  ==========================================  ===========
operation           argument                                    random sign
==================  ==========================================  ===========
ShearX / ShearY     shear ``0.3 * level / 10``                  yes
TranslateX / Y      ``translate * level / 10`` of the image side  yes
Rotate              ``30 * level / 10`` degrees                 yes
Color, Contrast,    enhance factor ``0.1 + 1.8 * level / 10``   no
Brightness,         (PIL ImageEnhance: 1 = unchanged)
Sharpness
Solarize            invert pixels ``>= 1 - level / 10``         no
Posterize           keep ``8 - int(4 * level / 10)`` bits       no
AutoContrast,       no magnitude                                --
Equalize, Invert
==================  ==========================================  ===========

``translate`` is 10/32 of the side for the CIFAR-10 policy (10 pixels at 32x32, the released
CIFAR code) and 150/331 for the ImageNet policy and RandAugment. Areas uncovered by a geometric
transform are filled with grey 0.5 (the reference's 128). On 1-channel images Color is the
identity (a grayscale image has no saturation).

The photometric operations are in :mod:`kerasdl.data.augment_photometric` (re-exported here).

Reference:
    Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from Data",
    CVPR 2019 (policies: Appendix, the ImageNet and reduced-CIFAR-10 tables).
    Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation with a reduced
    search space", CVPR Workshops 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from kerasdl.data.augment_photometric import (  # noqa: F401  (re-exported)
    autocontrast,
    blend,
    brightness,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    sharpness,
    solarize,
    solarize_add,
    to_uint8_levels,
)
from kerasdl.errors import UserError

OPS: tuple[str, ...] = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "AutoContrast",
    "Equalize",
    "Invert",
    "Solarize",
    "Posterize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "SolarizeAdd",  # timm's RandAugment (augment_timm.py), not the papers' vocabularies
)
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SIGNED = set(_GEOMETRIC)

# The 14 RandAugment transformations (paper, Section 3): identity plus 13 image operations.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Posterize",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)

# (operation, probability, level) pairs; level None = operation without magnitude.
IMAGENET_POLICY: tuple = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

CIFAR10_POLICY: tuple = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

POLICIES: dict[str, tuple] = {"imagenet": IMAGENET_POLICY, "cifar10": CIFAR10_POLICY}
TRANSLATE_FRACTION: dict[str, float] = {"imagenet": 150.0 / 331.0, "cifar10": 10.0 / 32.0}
FILL_VALUE = 0.5


def affine_matrices(
    op_index: tf.Tensor, value: tf.Tensor, height: tf.Tensor, width: tf.Tensor
) -> tf.Tensor:
    """Per-image ``(B, 8)`` projective transforms (output -> input pixel, as PIL's AFFINE data).

    ``value`` is the signed shear, translation in pixels or rotation in degrees; images whose op is
    not geometric get the identity.
    """
    one, zero = tf.ones_like(value), tf.zeros_like(value)
    identity = tf.stack([one, zero, zero, zero, one, zero, zero, zero], axis=1)
    cy = (tf.cast(height, value.dtype) - 1.0) / 2.0
    cx = (tf.cast(width, value.dtype) - 1.0) / 2.0
    theta = value * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    mats = {
        # PIL samples at pixel centres (x + 0.5): the shear's 0.5 * v offset keeps its grid.
        "ShearX": tf.stack([one, value, 0.5 * value, zero, one, zero, zero, zero], axis=1),
        "ShearY": tf.stack([one, zero, zero, value, one, 0.5 * value, zero, zero], axis=1),
        "TranslateX": tf.stack([one, zero, value, zero, one, zero, zero, zero], axis=1),
        "TranslateY": tf.stack([one, zero, zero, zero, one, value, zero, zero], axis=1),
        "Rotate": tf.stack(
            [
                cos,
                -sin,
                cx - cos * cx + sin * cy,
                sin,
                cos,
                cy - sin * cx - cos * cy,
                zero,
                zero,
            ],
            axis=1,
        ),
    }
    out = identity
    for name, mat in mats.items():
        out = tf.where((op_index == OPS.index(name))[:, None], mat, out)
    return out


_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")


def level_values(
    op_index: tf.Tensor,
    level: tf.Tensor,
    sign: tf.Tensor,
    translate: float,
    h: tf.Tensor,
    w: tf.Tensor,
) -> tf.Tensor:
    """Each image's operation argument (see :func:`apply_values`) from its ``level`` on the
    AutoAugment/RandAugment 0-10 scale (the table of the module docstring)."""
    frac = level / 10.0
    side = tf.where(
        op_index == OPS.index("TranslateY"), tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    )
    geometric = tf.gather(tf.constant([0.0, 0.3, 0.3, 0.0, 0.0, 30.0] + [0.0] * 9), op_index)
    is_translate = (op_index == OPS.index("TranslateX")) | (op_index == OPS.index("TranslateY"))
    value = tf.where(is_translate, translate * side, geometric) * frac * sign
    is_enhance = tf.reduce_any(tf.stack([op_index == OPS.index(n) for n in _ENHANCE]), axis=0)
    value = tf.where(is_enhance, 0.1 + 1.8 * frac, value)
    value = tf.where(op_index == OPS.index("Solarize"), 1.0 - frac, value)
    bits = tf.clip_by_value(8.0 - tf.floor(4.0 * frac), 1.0, 8.0)
    return tf.where(op_index == OPS.index("Posterize"), bits, value)


def apply_ops(
    x: tf.Tensor,
    op_index: tf.Tensor,
    level: tf.Tensor,
    sign: tf.Tensor,
    translate: float,
    used: set[str],
) -> tf.Tensor:
    """Apply to image ``i`` the operation ``OPS[op_index[i]]`` at ``level[i]`` (0-10 scale).

    Args:
        x: ``(B, H, W, C)`` float32 images in [0, 1].
        op_index: ``(B,)`` int32 indices into :data:`OPS` (0 = identity).
        level: ``(B,)`` float32 magnitudes on the papers' 0-10 scale.
        sign: ``(B,)`` float32 of +-1, the random sign of signed (geometric) operations.
        translate: maximum translation as a fraction of the image side (at level 10).
        used: names of the operations that can occur (others are not computed).
    """
    shape = tf.shape(x)
    value = level_values(op_index, level, sign, translate, shape[1], shape[2])
    return apply_values(x, op_index, value, used)


def apply_values(
    x: tf.Tensor,
    op_index: tf.Tensor,
    value: tf.Tensor,
    used: set[str],
    fill: float | tuple[float, ...] = FILL_VALUE,
    interpolation: str = "BILINEAR",
) -> tf.Tensor:
    """Apply to image ``i`` the operation ``OPS[op_index[i]]`` with argument ``value[i]``.

    The argument is the operation's own: the signed shear factor (ShearX/Y), translation in
    pixels (TranslateX/Y), rotation in degrees (Rotate), enhancement factor (Color, Contrast,
    Brightness, Sharpness: 1 = unchanged), threshold in [0, 1] (Solarize), amount in [0, 1]
    added below grey 128 (SolarizeAdd), bits kept (Posterize); ignored by the others.

    Args:
        x: ``(B, H, W, C)`` float32 images in [0, 1].
        op_index: ``(B,)`` int32 indices into :data:`OPS` (0 = identity).
        value: ``(B,)`` float32 arguments.
        used: names of the operations that can occur (others are not computed).
        fill: the value of areas a geometric operation uncovers (one, or one per channel).
        interpolation: ``"BILINEAR"`` or ``"NEAREST"`` for geometric operations.
    """
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    out = x

    def subset(mask: tf.Tensor, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> None:
        # Compute an operation only on the images that drew it, then scatter them back.
        nonlocal out
        idx = tf.where(mask)
        sub = fn(tf.gather_nd(x, idx), tf.gather_nd(value, idx))
        out = tf.tensor_scatter_nd_update(out, idx, sub)

    if used & set(_GEOMETRIC):
        is_geo = tf.reduce_any(tf.stack([op_index == OPS.index(n) for n in _GEOMETRIC]), axis=0)
        geo_op = tf.gather_nd(op_index, tf.where(is_geo))
        per_channel = not isinstance(fill, int | float)
        if per_channel and len(fill) != x.shape[-1]:
            raise UserError(
                f"fill: {len(fill)} values for images of {x.shape[-1]} channels; give one value "
                "or one per channel"
            )
        # a per-channel fill: transform (x - fill) with fill 0 and add it back (interpolation
        # weights sum to 1, so covered pixels are unchanged); a single fill needs neither
        shift = tf.constant(fill, tf.float32) if per_channel else None

        def transform(sub: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
            out = tf.raw_ops.ImageProjectiveTransformV3(
                images=sub if shift is None else sub - shift,
                transforms=affine_matrices(geo_op, v, h, w),
                output_shape=tf.stack([h, w]),
                fill_value=0.0 if per_channel else float(fill),
                interpolation=interpolation,
                fill_mode="CONSTANT",
            )
            return out if shift is None else out + shift

        subset(is_geo, transform)

    candidates: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
        "AutoContrast": lambda sub, v: autocontrast(sub),
        "Equalize": lambda sub, v: equalize(sub),
        "Invert": lambda sub, v: invert(sub),
        "Solarize": solarize,
        "SolarizeAdd": solarize_add,
        "Posterize": lambda sub, v: posterize(sub, tf.cast(v, tf.int32)),
        "Color": color,
        "Contrast": contrast,
        "Brightness": brightness,
        "Sharpness": sharpness,
    }
    for name, fn in candidates.items():
        if name in used:
            subset(op_index == OPS.index(name), fn)
    return out


def policy_tables(policy: str) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The policy as ``(ops, probs, levels)`` tensors of shape ``(num_subpolicies, 2)``."""
    table = POLICIES[policy]
    ops = [[OPS.index(op) for op, _, _ in sub] for sub in table]
    probs = [[p for _, p, _ in sub] for sub in table]
    levels = [[float(m or 0) for _, _, m in sub] for sub in table]
    return (
        tf.constant(ops, tf.int32),
        tf.constant(probs, tf.float32),
        tf.constant(levels, tf.float32),
    )


def _random_sign(gen: tf.random.Generator, n: tf.Tensor) -> tf.Tensor:
    return tf.where(gen.uniform((n,)) < 0.5, -1.0, 1.0)


def autoaugment(x: tf.Tensor, gen: tf.random.Generator, policy: str) -> tf.Tensor:
    """AutoAugment: per image, one sub-policy drawn uniformly; each of its two operations is
    applied with its probability at its level.

    Args:
        x: ``(B, H, W, C)`` float32 in [0, 1].
        gen: the random generator.
        policy: ``"imagenet"`` or ``"cifar10"``.
    """
    ops, probs, levels = policy_tables(policy)
    used = {op for sub in POLICIES[policy] for op, _, _ in sub}
    n = tf.shape(x)[0]
    choice = gen.uniform((n,), maxval=len(POLICIES[policy]), dtype=tf.int32)
    for stage in range(2):
        op = tf.gather(ops[:, stage], choice)
        apply = gen.uniform((n,)) < tf.gather(probs[:, stage], choice)
        op = tf.where(apply, op, 0)
        x = apply_ops(
            x,
            op,
            tf.gather(levels[:, stage], choice),
            _random_sign(gen, n),
            TRANSLATE_FRACTION[policy],
            used,
        )
    return x


def randaugment(
    x: tf.Tensor,
    gen: tf.random.Generator,
    num_ops: int,
    magnitude: float,
    random_magnitude: bool = False,
) -> tf.Tensor:
    """RandAugment: ``num_ops`` operations per image, each drawn uniformly from the 14
    transformations (identity included), all at the same ``magnitude`` (0-10 scale; larger
    values extrapolate the ranges, as the paper's M up to 28 for EfficientNet).

    With ``random_magnitude`` every operation of every image gets its own level, uniform in
    ``[0, magnitude]``: FixMatch's variant of RandAugment, which samples the magnitude at random
    instead of tuning a fixed one (Sohn et al. 2020, section 2.3; with magnitude 10 the levels
    span the ranges of its table 12).

    Args:
        x: ``(B, H, W, C)`` float32 in [0, 1].
        gen: the random generator.
        num_ops: N, operations applied in sequence.
        magnitude: M, the shared magnitude (the maximum with ``random_magnitude``).
        random_magnitude: draw the level of each operation and image in ``[0, M]``.
    """
    index = tf.constant([OPS.index(op) for op in RANDAUGMENT_OPS], tf.int32)
    n = tf.shape(x)[0]
    level = tf.fill((n,), tf.cast(magnitude, tf.float32))
    for _ in range(num_ops):
        op = tf.gather(index, gen.uniform((n,), maxval=len(RANDAUGMENT_OPS), dtype=tf.int32))
        if random_magnitude:
            level = gen.uniform((n,), 0.0, float(magnitude))
        x = apply_ops(
            x, op, level, _random_sign(gen, n), TRANSLATE_FRACTION["imagenet"], set(RANDAUGMENT_OPS)
        )
    return x
