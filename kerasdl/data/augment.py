"""Data augmentation for the training pipeline, listed and parameterized in ``data.augment``.

A recipe lists augmentations in the order they are applied::

    data:
      augment:
        - {name: random_crop, padding: 4}
        - {name: flip}
        - {name: cutout, size: 0.5}
        - {name: mixup, alpha: 0.2}

:func:`validate_augment` checks the list (one pydantic model per operation, see
:mod:`kerasdl.data.augment_specs`); :func:`build_augment` turns it into one function
``fn(images, labels) -> (images, labels)`` over BATCHES, for ``tf.data.Dataset.map`` in graph mode:
images float32 ``(B, H, W, C)`` in [0, 1] (before standardization), labels one-hot float32
``(B, K)``. Every operation keeps shapes, dtypes and the [0, 1] range.

Which code does what: Keras core layers for flip, rotation, zoom, translation, brightness,
contrast, saturation, hue, grayscale and MixUp; hand-written (here, :mod:`kerasdl.data.augment_ops`,
:mod:`kerasdl.data.augment_policies`) for what Keras and keras-cv lack as published, or draw per
batch rather than per image: per-image padded random crop, random resized crop, Gaussian blur with
a per-image sigma, cutout with a per-image size, PCA colour, Gaussian and salt-and-pepper noise,
random erasing, CutMix with the exact pasted-area label, MixUp-or-CutMix per batch, AutoAugment,
RandAugment and TrivialAugment Wide (:mod:`kerasdl.data.augment_trivial`).

The views of the semi- and self-supervised methods are lists of these operations too
(:data:`kerasdl.data.augment_specs.VIEWS`, built by :func:`kerasdl.data.ssl.build_view`).

Randomness: every operation owns a generator seeded from ``seed`` and its position in the list;
its state advances at every batch, so batches and epochs differ and rebuilding with the same seed
replays the same sequence (map sequentially, or with ``deterministic=True`` and one parallel call,
when a run must be bit-reproducible: parallel calls may take the states in another order).

One-channel images: saturation and hue have no meaning on grayscale; they are the identity on
1-channel images (``color_jitter`` then applies only brightness and contrast).

Example:
    >>> specs = validate_augment([{"name": "flip"}, {"name": "cutmix", "alpha": 1.0}])
    >>> fn = build_augment(specs, seed=0, num_classes=10)
    >>> ds = ds.batch(128).map(fn)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.data import augment_ops as ops
from kerasdl.data import augment_policies as policies
from kerasdl.data import augment_specs as specs_mod
from kerasdl.data.augment_specs import AUGMENT_NAMES, validate_augment  # noqa: F401 (re-exported)
from kerasdl.data.augment_timm import parse_config, timm_randaugment
from kerasdl.data.augment_trivial import trivial_augment_wide
from kerasdl.errors import UserError

AugmentFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def stats_required(specs: list[dict]) -> bool:
    """True when an operation in ``specs`` needs training-set statistics (see
    :func:`compute_pca_stats`)."""
    return any(s.get("name") in specs_mod.NEEDS_STATS for s in specs or [])


def compute_pca_stats(images: Any) -> dict[str, list]:
    """Eigen-decomposition of the covariance of pixel values over a training set (for
    ``pca_color``).

    Args:
        images: an array ``(N, H, W, C)`` (or ``(H, W, C)``), or an iterable of arrays/tensors
            or of ``(image, label)`` tuples, e.g. a ``tf.data.Dataset`` of training images in
            [0, 1]. Streamed in float64, so the whole set needn't fit in memory.

    Returns:
        ``{"pca_eigenvalues": [C], "pca_eigenvectors": [[C] * C]}`` (eigenvectors as columns,
        eigenvalues descending), JSON-friendly for the run folder.

    Reference: Krizhevsky et al. 2012, Section 4.1 ("PCA on the set of RGB pixel values
    throughout the ImageNet training set").
    """
    if isinstance(images, np.ndarray | tf.Tensor):
        images = [images]
    elif isinstance(images, tf.data.Dataset):
        images = images.batch(1024).as_numpy_iterator()  # rank doesn't matter: pixels are rows
    total, outer, count = None, None, 0
    for item in images:
        if isinstance(item, tuple | list):
            item = item[0]
        arr = np.asarray(item, dtype=np.float64)
        pixels = arr.reshape(-1, arr.shape[-1])
        if total is None:
            total = np.zeros(pixels.shape[1])
            outer = np.zeros((pixels.shape[1], pixels.shape[1]))
        total += pixels.sum(axis=0)
        outer += pixels.T @ pixels
        count += pixels.shape[0]
    if not count:
        raise UserError("pca_color: no training images to compute the PCA colour statistics from")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    eigvals = np.clip(eigvals[order], 0.0, None)
    return {
        "pca_eigenvalues": eigvals.tolist(),
        "pca_eigenvectors": eigvecs[:, order].tolist(),
    }


def _image_op(fn: Callable[[tf.Tensor], tf.Tensor]) -> AugmentFn:
    def op(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(fn(x), tf.float32), y

    return op


def _layer(layer: keras.layers.Layer) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda x: layer(x, training=True)


def _rgb_only(fn: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """Identity on 1-channel images (saturation and hue do not exist in grayscale)."""
    return lambda x: x if x.shape[-1] == 1 else fn(x)


def _saturation(factor: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    # Keras scales S by u / (1 - u) with u ~ U(range): this range gives multipliers in [1-f, 1+f].
    lo, hi = (1 - factor) / (2 - factor), (1 + factor) / (2 + factor)
    layer = keras.layers.RandomSaturation((lo, hi), value_range=(0, 1), seed=seed, dtype="float32")
    return _rgb_only(_layer(layer))


def _hue(factor: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    # Keras shifts the hue by +-U(range) / 2 of the colour circle: this gives shifts in [-f, f].
    layer = keras.layers.RandomHue(
        (0.0, 2 * factor), value_range=(0, 1), seed=seed, dtype="float32"
    )
    return _rgb_only(_layer(layer))


def _brightness(factor: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    return _layer(
        keras.layers.RandomBrightness(factor, value_range=(0, 1), seed=seed, dtype="float32")
    )


def _contrast(factor: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    return _layer(
        keras.layers.RandomContrast(factor, value_range=(0, 1), seed=seed, dtype="float32")
    )


def _geometric_kw(p: Any) -> dict[str, Any]:
    return {
        "fill_mode": p.fill_mode,
        "fill_value": p.fill_value,
        "interpolation": p.interpolation,
        "dtype": "float32",
    }


def _color_jitter(p: Any, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    parts = []
    if p.brightness:
        parts.append(_brightness(p.brightness, seed))
    if p.contrast:
        parts.append(_contrast(p.contrast, seed + 1))
    if p.saturation:
        parts.append(_saturation(p.saturation, seed + 2))
    if p.hue:
        parts.append(_hue(p.hue, seed + 3))

    def fn(x: tf.Tensor) -> tf.Tensor:
        for part in parts:
            x = part(x)
        return x

    return fn


def cutout(
    x: tf.Tensor,
    gen: tf.random.Generator,
    size: float | tuple[float, float] | list[float],
    num_holes: int = 1,
    fill: float = 0.0,
) -> tf.Tensor:
    """Cutout: ``num_holes`` boxes of ``ceil(u H) x ceil(u W)`` pixels per image, centre uniform
    over the image, clipped at the borders, filled with ``fill``; ``u = size``, or for a range
    ``u ~ U(min, max)`` drawn per image and hole (FixMatch's: ``[0, 0.5]``, grey 0.5).

    References: DeVries & Taylor 2017; Sohn et al. 2020, table 12.
    """
    h, w = x.shape[1], x.shape[2]
    n = tf.shape(x)[0]
    lo, hi = (size, size) if isinstance(size, int | float) else size
    for _ in range(num_holes):
        u = gen.uniform((n,), lo, hi) if hi > lo else tf.fill((n,), float(lo))
        ch = tf.minimum(tf.cast(tf.math.ceil(u * h), tf.int32), h)
        cw = tf.minimum(tf.cast(tf.math.ceil(u * w), tf.int32), w)
        y0 = gen.uniform((n,), maxval=h, dtype=tf.int32) - ch // 2
        x0 = gen.uniform((n,), maxval=w, dtype=tf.int32) - cw // 2
        mask = ops.box_mask(y0, x0, y0 + ch, x0 + cw, h, w)
        x = tf.where(mask, tf.cast(fill, x.dtype), x)
    return x


def random_resized_crop(
    x: tf.Tensor,
    gen: tf.random.Generator,
    scale: tuple[float, float] | list[float],
    ratio: tuple[float, float] | list[float],
    attempts: int = 10,
    interpolation: str = "bilinear",
) -> tf.Tensor:
    """Random resized crop, per image, resized back to ``H x W``.

    Per attempt: area ``U(scale) H W``, aspect ratio ``w / h`` log-uniform in ``ratio``, integer
    size ``round(sqrt(area ratio)) x round(sqrt(area / ratio))``; the first attempt that fits
    is cropped at a uniform integer offset; after ``attempts`` misses, the centre crop of the whole
    image with its ratio clamped into ``ratio`` (torchvision's ``RandomResizedCrop``, the
    transform of SimCLR, MoCo and MAE). ``scale: [1, 1]`` on a square image is the identity.

    References: Szegedy et al. 2015 (GoogLeNet's crops); Chen et al. 2020; He et al. 2022.
    """
    h, w = x.shape[1], x.shape[2]
    n = tf.shape(x)[0]
    area = gen.uniform((n, attempts), scale[0], scale[1]) * float(h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    r = tf.exp(gen.uniform((n, attempts), log_lo, log_hi)) if log_hi > log_lo else ratio[0]
    cw = tf.cast(tf.round(tf.sqrt(area * r)), tf.int32)
    ch = tf.cast(tf.round(tf.sqrt(area / r)), tf.int32)
    fits = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    # fallback: the whole image, its ratio clamped into the range (torchvision's)
    if w / h < ratio[0]:
        fh, fw = round(w / ratio[0]), w
    elif w / h > ratio[1]:
        fh, fw = h, round(h * ratio[1])
    else:
        fh, fw = h, w
    ch = tf.where(found, tf.gather(ch, first, batch_dims=1), fh)
    cw = tf.where(found, tf.gather(cw, first, batch_dims=1), fw)
    uy, ux = gen.uniform((n,)), gen.uniform((n,))
    top = tf.where(found, tf.cast(uy * tf.cast(h - ch + 1, tf.float32), tf.int32), (h - fh) // 2)
    left = tf.where(found, tf.cast(ux * tf.cast(w - cw + 1, tf.float32), tf.int32), (w - fw) // 2)
    top, left = tf.minimum(top, h - ch), tf.minimum(left, w - cw)
    # boxes through the centres of the crop's corner pixels: a full crop is the identity
    sy, sx = float(max(h - 1, 1)), float(max(w - 1, 1))
    boxes = tf.cast(tf.stack([top, left, top + ch - 1, left + cw - 1], axis=1), tf.float32)
    boxes = boxes / tf.constant([sy, sx, sy, sx])
    out = tf.image.crop_and_resize(x, boxes, tf.range(n), (h, w), method=interpolation)
    return tf.ensure_shape(out, x.shape)


def gaussian_blur(
    x: tf.Tensor,
    gen: tf.random.Generator,
    kernel: float,
    sigma: tuple[float, float] | list[float],
) -> tf.Tensor:
    """Gaussian blur with ``sigma ~ U(sigma)`` per image, a ``(2r + 1)``-tap separable kernel with
    ``r = int(kernel x min(H, W)) // 2`` (at least 1) and reflect padding.

    SimCLR's blur: kernel 10% of the side, sigma in [0.1, 2.0] (Chen et al. 2020, appendix A);
    the reference pads with zeros, torchvision's ``GaussianBlur`` reflects (used here: a blur
    keeps a constant image constant).
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    r = min(max(1, int(kernel * min(h, w)) // 2), min(h, w) - 1)
    if r < 1:
        return x
    n = tf.shape(x)[0]
    s = gen.uniform((n, 1), sigma[0], sigma[1])
    taps = tf.range(-r, r + 1, dtype=tf.float32)[None, :]
    g = tf.exp(-tf.square(taps) / (2.0 * tf.square(s)))
    g = tf.repeat(g / tf.reduce_sum(g, axis=1, keepdims=True), c, axis=0)  # (N C, 2r + 1)
    # every (image, channel) pair is a channel of one image: one depthwise conv, per-image kernels
    planes = tf.reshape(tf.transpose(x, (1, 2, 0, 3)), (1, h, w, -1))
    planes = tf.pad(planes, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    k = tf.transpose(g)  # (2r + 1, N C)
    planes = tf.nn.depthwise_conv2d(
        planes, tf.reshape(k, (2 * r + 1, 1, -1, 1)), (1, 1, 1, 1), "VALID"
    )
    planes = tf.nn.depthwise_conv2d(
        planes, tf.reshape(k, (1, 2 * r + 1, -1, 1)), (1, 1, 1, 1), "VALID"
    )
    out = tf.transpose(tf.reshape(planes, (h, w, n, c)), (2, 0, 1, 3))
    return tf.ensure_shape(out, x.shape)


def _fill(value: float | list[float] | tuple[float, ...]) -> float | tuple[float, ...]:
    return float(value) if isinstance(value, int | float) else tuple(float(v) for v in value)


def _mixup(alpha: float, seed: int) -> AugmentFn:
    layer = keras.layers.MixUp(alpha=alpha, seed=seed, dtype="float32")

    def mixup(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out = layer({"images": x, "labels": y}, training=True)
        return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

    return mixup


def _build_one(name: str, p: Any, seed: int, stats: dict | None) -> AugmentFn:
    gen = tf.random.Generator.from_seed(seed)
    L = keras.layers
    if name == "mixup":
        return _mixup(p.alpha, seed)
    if name == "cutmix":
        return lambda x, y: ops.cutmix(x, y, gen, p.alpha)
    if name == "mixup_or_cutmix":
        mix = _mixup(p.mixup_alpha, seed)

        def mixup_or_cutmix(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # both are cheap: compute both and keep one for the whole batch (no branch to trace)
            use_cutmix = gen.uniform(()) < p.switch_prob
            mx, my = mix(x, y)
            cx, cy = ops.cutmix(x, y, gen, p.cutmix_alpha)
            return tf.where(use_cutmix, cx, mx), tf.where(use_cutmix, cy, my)

        return mixup_or_cutmix
    if name == "pca_color":
        eigvals = tf.constant(stats["pca_eigenvalues"], tf.float32)
        eigvecs = tf.constant(stats["pca_eigenvectors"], tf.float32)
        return _image_op(lambda x: ops.pca_color(x, gen, eigvals, eigvecs, p.std))
    builders: dict[str, Callable[[], Callable[[tf.Tensor], tf.Tensor]]] = {
        "flip": lambda: _layer(L.RandomFlip(p.mode, seed=seed, dtype="float32")),
        "rotation": lambda: _layer(
            L.RandomRotation(p.degrees / 360.0, seed=seed, **_geometric_kw(p))
        ),
        "zoom": lambda: _layer(L.RandomZoom(p.factor, seed=seed, **_geometric_kw(p))),
        "translation": lambda: _layer(
            L.RandomTranslation(p.height, p.width, seed=seed, **_geometric_kw(p))
        ),
        "random_crop": lambda: (
            lambda x: ops.pad_and_crop(x, gen, p.padding, p.padding_mode, p.fill_value)
        ),
        "brightness": lambda: _brightness(p.factor, seed),
        "contrast": lambda: _contrast(p.factor, seed),
        "saturation": lambda: _saturation(p.factor, seed),
        "hue": lambda: _hue(p.factor, seed),
        "color_jitter": lambda: _color_jitter(p, seed),
        "gaussian_noise": lambda: lambda x: ops.gaussian_noise(x, gen, p.std, p.clip),
        "salt_and_pepper": lambda: lambda x: ops.salt_and_pepper(x, gen, p.amount, p.salt_ratio),
        "cutout": lambda: lambda x: cutout(x, gen, p.size, p.num_holes, p.fill),
        "random_resized_crop": lambda: (
            lambda x: random_resized_crop(x, gen, p.scale, p.ratio, p.attempts, p.interpolation)
        ),
        "grayscale": lambda: _rgb_only(
            _layer(L.RandomGrayscale(factor=1.0, seed=seed, dtype="float32"))
        ),
        "gaussian_blur": lambda: lambda x: gaussian_blur(x, gen, p.kernel, p.sigma),
        "random_erasing": lambda: (
            lambda x: ops.random_erasing(x, gen, p.area, p.ratio, p.fill, p.attempts)
        ),
        "autoaugment": lambda: lambda x: policies.autoaugment(x, gen, p.policy),
        "randaugment": lambda: (
            lambda x: policies.randaugment(
                x, gen, p.num_ops, p.magnitude, p.magnitude_sampling == "uniform"
            )
        ),
        "rand_augment_timm": lambda: (
            lambda x: timm_randaugment(
                x, gen, parse_config(p.config), _fill(p.fill), p.translate_pct
            )
        ),
        "trivial_augment_wide": lambda: (
            lambda x: trivial_augment_wide(x, gen, p.num_magnitude_bins, p.interpolation, p.fill)
        ),
    }
    return _image_op(builders[name]())


def _with_probability(op: AugmentFn, prob: float, seed: int) -> AugmentFn:
    """Apply ``op`` to each image (and its label) with probability ``prob``."""
    if prob >= 1.0:
        return op
    gen = tf.random.Generator.from_seed(seed)

    def fn(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ax, ay = op(x, y)
        chosen = gen.uniform(tf.shape(x)[:1]) < prob
        return (
            tf.where(chosen[:, None, None, None], ax, x),
            tf.where(chosen[:, None], ay, y),
        )

    return fn


def build_augment(
    specs: list[dict], *, seed: int, num_classes: int, stats: dict | None = None
) -> AugmentFn:
    """Build the batch augmentation function of a recipe's ``data.augment`` list.

    Args:
        specs: the augmentation list (validated here again; :func:`validate_augment`'s output).
        seed: base seed; operation ``i`` gets its own generator seeded from ``(seed, i)``.
        num_classes: K, the one-hot label width (checked when the function is traced).
        stats: training-set statistics for operations that need them (``pca_color``:
            :func:`compute_pca_stats`'s output).

    Returns:
        ``fn(images, labels) -> (images, labels)`` for ``tf.data.Dataset.map`` over batches.

    Raises:
        UserError: invalid specs, or an operation that needs ``stats`` built without them.
    """
    specs = validate_augment(list(specs or []))
    fns: list[AugmentFn] = []
    for i, spec in enumerate(specs):
        name = spec["name"]
        needed = specs_mod.NEEDS_STATS.get(name, ())
        missing = [k for k in needed if not stats or k not in stats]
        if missing:
            raise UserError(
                f"data.augment[{i}] ({name}): needs training-set statistics {', '.join(missing)}; "
                "compute them with kerasdl.data.augment.compute_pca_stats(train_images) and pass "
                "stats= to build_augment"
            )
        params = specs_mod.SPECS[name](**{k: v for k, v in spec.items() if k != "name"})
        op_seed = (int(seed) * 1_000_003 + 7919 * (i + 1)) % (2**31 - 1)
        if params.p <= 0.0:
            continue
        fns.append(
            _with_probability(_build_one(name, params, op_seed, stats), params.p, op_seed + 1)
        )

    # No Python control flow depends on tensors here: skip AutoGraph (faster tracing, and it
    # cannot mis-parse the nested lambdas above).
    @tf.autograph.experimental.do_not_convert
    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        labels = tf.cast(labels, tf.float32)
        if images.shape.rank != 4 or None in images.shape[1:]:
            raise ValueError(
                "augment works on batches of images (B, H, W, C) with a known size. "
                f"Received shape {images.shape}: batch the dataset before mapping it"
            )
        if labels.shape.rank != 2 or labels.shape[-1] not in (None, num_classes):
            raise ValueError(
                f"augment expects one-hot labels (B, {num_classes}). Received shape {labels.shape}"
            )
        for fn in fns:
            images, labels = fn(images, labels)
        return images, labels

    return augment
