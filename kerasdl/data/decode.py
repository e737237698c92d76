"""Streaming decode: encoded image bytes to the model's size, one image at a time, in parallel.

The streamed sources (``tfds`` and ``folder``, :mod:`kerasdl.data.sources`) yield encoded bytes;
:func:`decode_split` decodes them inside ``tf.data.Dataset.map`` with ``num_parallel_calls``
(TensorFlow's decoders run outside the GIL), and crops per ``data.crop``:

* ``resize``: the whole image, resized as :func:`kerasdl.data.preprocess.preprocess_images` does;
* ``random_resized``: torchvision's ``RandomResizedCrop`` (area ``U(scale)`` of the image,
  log-uniform aspect ratio in ``ratio``, 10 attempts, then the centre crop with the ratio clamped;
  Szegedy et al. 2015), the window drawn from a stateless generator seeded per image;
* ``center``: torchvision's ``Resize(image_size / crop_fraction)`` + ``CenterCrop(image_size)``,
  computed as the equivalent window of the original image, then resized.

JPEG files are decoded only inside the window (``tf.image.decode_and_crop_jpeg``, as TF Model
Garden's ImageNet input does), which is what makes ImageNet-size images affordable on a CPU.

:func:`decode_image` is the one decoder of encoded images to a channel count, shared by this
pipeline, the ``folder`` source's checks and the exported ``serving_bytes`` signature
(:mod:`kerasdl.export.saved_model`), so that training and serving see the same pixels.

The random windows take their seeds from ``tf.data.Dataset.random(seed,
rerandomize_each_iteration=True)`` zipped with the images: each image gets its own seed, so the
parallel decoders draw the same windows in any order, and every pass over the data draws anew.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from kerasdl.config.schema import CropConfig
from kerasdl.data.preprocess import PreprocessSpec, preprocess_images, to_unit_float

AUTOTUNE = tf.data.AUTOTUNE
Window = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]  # top, left, height, width

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEADER = 32  # bytes of the header sniffed for the format
_WEBP_ANIMATION_FLAG = 0x02  # in the VP8X chunk's flags byte (offset 20)


def _jpeg_or_png(data: tf.Tensor) -> tf.Tensor:
    """Whether ``data`` starts with JPEG's or PNG's magic bytes (the formats whose decoders take
    any channel count): two cheap ops, all that the common case pays."""
    return tf.io.is_jpeg(data) | tf.equal(tf.strings.substr(data, 0, len(PNG_MAGIC)), PNG_MAGIC)


def _sniff_webp(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(webp, animated_webp)`` from the magic bytes, as TensorFlow's ``DecodeImageV2`` tells
    WebP apart (and libwebp an animation: a ``VP8X`` chunk first, with the animation flag set).
    Graph-safe: reads a zero-padded copy of the first bytes."""
    head = tf.strings.join([tf.strings.substr(data, 0, _HEADER), b"\0" * _HEADER])
    webp = tf.equal(tf.strings.substr(head, 0, 4), b"RIFF") & tf.equal(
        tf.strings.substr(head, 8, 4), b"WEBP"
    )
    flags = tf.io.decode_raw(tf.strings.substr(head, 20, 1), tf.uint8)[0]
    animated = (
        webp
        & tf.equal(tf.strings.substr(head, 12, 4), b"VP8X")
        & tf.not_equal(tf.bitwise.bitwise_and(flags, _WEBP_ANIMATION_FLAG), 0)
    )
    return webp, animated


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """A uint8 image of 1, 3 or 4 channels (known only when run) as ``channels`` channels: an
    alpha channel dropped (or an opaque one added), gray repeated to RGB, RGB to gray with
    ``tf.image.rgb_to_grayscale`` (ITU-R 601 weights)."""
    if channels == 0:
        return image
    n = tf.shape(image)[-1]
    rgb = tf.cond(n < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    rgb = tf.ensure_shape(rgb, (None, None, 3))
    if channels == 1:
        return tf.image.rgb_to_grayscale(rgb)
    if channels == 3:
        return rgb
    opaque = tf.fill(tf.shape(rgb[..., :1]), tf.constant(255, tf.uint8))
    return tf.cond(tf.equal(n, 4), lambda: image, lambda: tf.concat([rgb, opaque], axis=-1))


def decode_image(data: tf.Tensor | bytes, channels: int) -> tf.Tensor:
    """Encoded image bytes (JPEG, PNG, GIF, BMP, WebP; an animation's first frame) as uint8
    ``(height, width, channels)``; works eagerly, in ``tf.data`` and in a SavedModel graph.

    Each format's decoder accepts only some channel counts (GIF: 0 or 3; BMP: 0, 3 or 4; WebP: 0
    or the file's own 3 or 4), so:

    * JPEG and PNG: their decoder at ``channels`` (``tf.io.decode_image(data, channels)``);
    * GIF, BMP (and any other format): decoded at ``channels`` when that is 0 or 3; for 1, decoded
      as RGB (a BMP's alpha channel dropped) and converted with ``tf.image.rgb_to_grayscale``
      (ITU-R 601 weights, as libjpeg's grayscale; a gray image stays exactly as it is); for 4,
      decoded as they are and given an opaque alpha channel when they have none;
    * WebP: decoded with the file's own channels (RGBA for an animation: TensorFlow 2.21's WebP
      animation decoder corrupts the heap with ``channels=0`` on an animation without alpha;
      asked for 4 it refuses such a file instead), then converted as above.

    Args:
        data: a scalar string, the encoded image.
        channels: 1, 3 or 4; 0 keeps the file's own channel count (GIF and WebP: 3 or 4).

    Returns:
        A uint8 tensor ``(height, width, channels)``.

    Raises:
        tf.errors.InvalidArgumentError: ``data`` is no image or a corrupt one (when run).
    """
    if channels not in (0, 1, 3, 4):
        raise ValueError(f"channels must be 0, 1, 3 or 4. Received: {channels}")
    data = tf.convert_to_tensor(data, tf.string)

    def decode(c: int) -> tf.Tensor:
        return tf.io.decode_image(data, channels=c, expand_animations=False)

    def as_webp(animated_webp: tf.Tensor) -> tf.Tensor:
        own = tf.cond(animated_webp, lambda: decode(4), lambda: decode(0))
        return _to_channels(own, channels)

    def other() -> tf.Tensor:
        if channels in (0, 3):
            return decode(channels)
        if channels == 1:
            return tf.image.rgb_to_grayscale(decode(3))
        return _to_channels(decode(0), channels)

    def not_jpeg_or_png() -> tf.Tensor:
        webp, animated_webp = _sniff_webp(data)
        return tf.cond(webp, lambda: as_webp(animated_webp), other)

    image = tf.cond(_jpeg_or_png(data), lambda: decode(channels), not_jpeg_or_png)
    return tf.ensure_shape(image, (None, None, channels or None))


def random_resized_window(
    hw: tf.Tensor,
    seed: tf.Tensor,
    scale: list[float],
    ratio: list[float],
    attempts: int = 10,
) -> Window:
    """A ``RandomResizedCrop`` window of an ``(H, W)`` image, drawn from ``seed`` (shape [2]).

    Per attempt: area ``U(scale) H W``, aspect ratio ``w / h`` log-uniform in ``ratio``; the
    first attempt that fits is placed uniformly; after ``attempts`` misses, the centre window
    of the whole image with its ratio clamped into ``ratio`` (torchvision's rule).
    """
    h, w = tf.cast(hw[0], tf.float32), tf.cast(hw[1], tf.float32)
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    area = tf.random.stateless_uniform([attempts], s[0], scale[0], scale[1]) * h * w
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = tf.exp(tf.random.stateless_uniform([attempts], s[1], lo, hi))
    cw, ch = tf.round(tf.sqrt(area * r)), tf.round(tf.sqrt(area / r))
    fits = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)
    aspect = w / h
    fw = tf.where(aspect > ratio[1], tf.round(h * ratio[1]), w)
    fh = tf.where(aspect < ratio[0], tf.round(w / ratio[0]), h)
    ch = tf.where(found, tf.gather(ch, first), fh)
    cw = tf.where(found, tf.gather(cw, first), fw)
    u = tf.random.stateless_uniform([2], s[2])
    top = tf.where(found, tf.floor(u[0] * (h - ch + 1)), tf.floor((h - ch) / 2))
    left = tf.where(found, tf.floor(u[1] * (w - cw + 1)), tf.floor((w - cw) / 2))
    top, left = tf.minimum(top, h - ch), tf.minimum(left, w - cw)
    return tuple(tf.cast(v, tf.int32) for v in (top, left, ch, cw))  # type: ignore[return-value]


def center_window(hw: tf.Tensor, size: tuple[int, int], crop_fraction: float) -> Window:
    """The window of an ``(H, W)`` image that torchvision's ``Resize(round(min(size) /
    crop_fraction))`` then ``CenterCrop(size)`` keeps, in the original image's pixels."""
    h, w = tf.cast(hw[0], tf.float32), tf.cast(hw[1], tf.float32)
    shorter = float(round(min(size) / crop_fraction))
    k = shorter / tf.minimum(h, w)  # the resize's scale
    ch = tf.minimum(tf.round(size[0] / k), h)
    cw = tf.minimum(tf.round(size[1] / k), w)
    top, left = tf.floor((h - ch) / 2), tf.floor((w - cw) / 2)
    return tuple(tf.cast(v, tf.int32) for v in (top, left, ch, cw))  # type: ignore[return-value]


def decode_window(
    data: tf.Tensor, channels: int, window: Callable[[tf.Tensor], Window] | None
) -> tf.Tensor:
    """Decode encoded image bytes (JPEG, PNG, GIF, BMP, WebP) as uint8 ``(h, w, channels)``
    (:func:`decode_image`), only inside ``window(image_hw)`` when one is given (JPEG: decoded
    inside the window only)."""
    if window is None:
        return decode_image(data, channels)

    def jpeg() -> tf.Tensor:
        top, left, h, w = window(tf.image.extract_jpeg_shape(data)[:2])
        return tf.image.decode_and_crop_jpeg(data, tf.stack([top, left, h, w]), channels=channels)

    def other() -> tf.Tensor:
        image = decode_image(data, channels)
        top, left, h, w = window(tf.shape(image)[:2])
        return image[top : top + h, left : left + w]

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    return tf.ensure_shape(image, (None, None, channels))


def decode_split(
    ds: tf.data.Dataset,
    native_shape: tuple,
    spec: PreprocessSpec,
    crop: CropConfig,
    mode: str,
    seed: int = 0,
) -> tf.data.Dataset:
    """Encoded ``(bytes, label)`` to ``(float32 image in [0, 1] at spec's size and channels,
    label)``, decoded in parallel (order kept).

    Args:
        ds: unbatched ``(encoded image, int label)``.
        native_shape: the images' ``(H, W, C)`` (``None`` where they vary); ``C`` is decoded.
        spec: the size and channels to produce (its mean/std are not applied here).
        crop: ``data.crop``.
        mode: ``resize``, ``random_resized`` or ``center`` (``crop.train`` or ``crop.eval``).
        seed: seed of the random windows.
    """
    channels = int(native_shape[-1])
    unit = spec.unit()
    size = (int(spec.image_size[0]), int(spec.image_size[1]))
    known = tuple(native_shape[:2]) == size

    def finish(image: tf.Tensor) -> tf.Tensor:
        if known and mode == "resize":
            image = tf.ensure_shape(image, (*size, channels))  # no resize needed
        return preprocess_images(to_unit_float(image), unit)

    if mode == "resize":
        return ds.map(
            lambda x, y: (finish(decode_window(x, channels, None)), y), num_parallel_calls=AUTOTUNE
        )
    if mode == "center":
        window = lambda hw: center_window(hw, size, crop.crop_fraction)  # noqa: E731
        return ds.map(
            lambda x, y: (finish(decode_window(x, channels, window)), y),
            num_parallel_calls=AUTOTUNE,
        )

    def crop_one(x: tf.Tensor, y: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.stack([s, tf.constant(seed, tf.int64)])
        window = lambda hw: random_resized_window(hw, seeds, crop.scale, crop.ratio)  # noqa: E731
        return finish(decode_window(x, channels, window)), y

    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    zipped = tf.data.Dataset.zip((ds, draws)).map(lambda xy, s: (xy[0], xy[1], s))
    return zipped.map(crop_one, num_parallel_calls=AUTOTUNE)
