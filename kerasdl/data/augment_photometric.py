"""The photometric image operations of AutoAugment and RandAugment, on batches in [0, 1].

PIL ``ImageEnhance`` blends (colour, contrast, brightness, sharpness) and ``ImageOps`` point
operations (auto-contrast, equalize, invert, solarize, posterize, and timm's solarize-add), each
computed for a whole ``(B, H, W, C)`` float32 batch with a per-image ``(B,)`` argument, in graph
mode inside ``tf.data``. :mod:`kerasdl.data.augment_policies` picks among them per image (and
holds the geometric operations, the level mapping and the policies); it re-exports every name
here.

Reference:
    Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from Data",
    CVPR 2019.
    Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation with a reduced
    search space", CVPR Workshops 2020.
"""

from __future__ import annotations

import tensorflow as tf


def _col(v: tf.Tensor) -> tf.Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting against images."""
    return tf.reshape(v, (-1, 1, 1, 1))


def _grayscale(x: tf.Tensor) -> tf.Tensor:
    if x.shape[-1] == 1:
        return x
    return tf.image.rgb_to_grayscale(x)


def blend(degenerate: tf.Tensor, x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ``ImageEnhance``: ``degenerate + factor * (x - degenerate)``, clipped to [0, 1]."""
    return tf.clip_by_value(degenerate + _col(factor) * (x - degenerate), 0.0, 1.0)


def color(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Saturation: blend with the grayscale image (identity on 1 channel)."""
    if x.shape[-1] == 1:
        return x
    return blend(tf.broadcast_to(_grayscale(x), tf.shape(x)), x, factor)


def contrast(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Contrast: blend with the image's mean grey level."""
    mean = tf.reduce_mean(_grayscale(x), axis=(1, 2, 3), keepdims=True)
    return blend(tf.broadcast_to(mean, tf.shape(x)), x, factor)


def brightness(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Brightness: blend with black."""
    return blend(tf.zeros_like(x), x, factor)


def sharpness(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Sharpness: blend with PIL's SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 / 1 1 1, / 13).

    As in PIL, the one-pixel border keeps its original values.
    """
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    # 3x3 neighbourhood sum as 9 shifted views (no conv: it mis-shapes empty batches on oneDNN).
    window = tf.add_n([x[:, i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3)])
    smooth = (window + 4.0 * x[:, 1 : h - 1, 1 : w - 1]) / 13.0
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    inner = tf.pad(tf.ones((h - 2, w - 2), tf.bool), [[1, 1], [1, 1]])[None, :, :, None]
    degenerate = tf.where(inner, smooth, x)
    return blend(degenerate, x, factor)


def autocontrast(x: tf.Tensor) -> tf.Tensor:
    """Per image and channel, stretch [min, max] to [0, 1] (unchanged where max == min)."""
    lo = tf.reduce_min(x, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(x, axis=(1, 2), keepdims=True)
    scale = tf.where(hi > lo, 1.0 / tf.maximum(hi - lo, 1e-12), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    return tf.clip_by_value((x - offset) * scale, 0.0, 1.0)


def to_uint8_levels(x: tf.Tensor) -> tf.Tensor:
    """[0, 1] floats -> int32 grey levels 0..255 (rounded)."""
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.int32)


def equalize(x: tf.Tensor) -> tf.Tensor:
    """Per image and channel histogram equalization, PIL ``ImageOps.equalize``'s algorithm.

    On 256 levels: ``step = (N - count of the highest level) // 255``;
    ``lut[i] = (step // 2 + sum_{j<i} hist[j]) // step``; identity when ``step == 0``.
    """
    shape = tf.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    # transposed as floats: oneDNN's int32 transpose logs an error line on some CPUs
    levels = tf.reshape(to_uint8_levels(tf.transpose(x, (0, 3, 1, 2))), (b * c, h * w))
    rows = b * c
    offsets = tf.range(rows)[:, None] * 256
    hist = tf.math.bincount(
        tf.reshape(levels + offsets, [-1]), minlength=rows * 256, maxlength=rows * 256
    )
    hist = tf.reshape(hist, (rows, 256))
    last = 255 - tf.argmax(
        tf.reverse(tf.cast(hist > 0, tf.int32), axis=[1]), axis=1, output_type=tf.int32
    )
    last_count = tf.gather(hist, last, batch_dims=1)
    step = (h * w - last_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    cum = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.minimum((safe_step // 2 + cum) // safe_step, 255)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    out = tf.cast(tf.gather(lut, levels, batch_dims=1), x.dtype)
    return tf.transpose(tf.reshape(out, (b, c, h, w)), (0, 2, 3, 1)) / 255.0


def invert(x: tf.Tensor) -> tf.Tensor:
    return 1.0 - x


def solarize(x: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Invert every pixel ``>= threshold`` (PIL ``ImageOps.solarize``; threshold in [0, 1])."""
    return tf.where(x >= _col(threshold), 1.0 - x, x)


def solarize_add(x: tf.Tensor, add: tf.Tensor, threshold: float = 128 / 255) -> tf.Tensor:
    """Add ``add`` to every pixel below ``threshold``, clipped to 1 (timm's ``solarize_add``,
    from the TPU EfficientNet AutoAugment code; both in [0, 1])."""
    return tf.where(x < threshold, tf.minimum(x + _col(add), 1.0), x)


def posterize(x: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Keep the ``bits`` most significant bits of each 8-bit level (PIL ``ImageOps.posterize``)."""
    div = tf.cast(tf.bitwise.left_shift(1, 8 - tf.cast(bits, tf.int32)), tf.int32)
    q = (to_uint8_levels(x) // _col(div)) * _col(div)
    return tf.cast(q, x.dtype) / 255.0
