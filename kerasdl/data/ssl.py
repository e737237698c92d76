"""Data for the semi- and self-supervised methods: label splits, unlabelled streams and views.

* :func:`split_labelled` keeps ``N`` labels per class (stratified, seeded) and returns the
  labelled set and the unlabelled set (all training images by default, as in FixMatch).
* :func:`semi_supervised_dataset` zips a repeated labelled stream (batch ``B``) with one pass over
  the unlabelled stream (batch ``mu * B``), each unlabelled image expanded into the views the
  method needs: ``((x_labelled, y_onehot), (view, ...))``.
* :func:`contrastive_dataset` yields ``(view1, view2)`` batches for SimCLR / MoCo and
  :func:`masked_image_dataset` single-view batches for MAE.

Views work on images in ``[0, 1]`` (what ``kerasdl.data.load_data`` yields); when the recipe
standardizes (``data.mean`` / ``data.std``), the views are standardized after augmentation, as in
``kerasdl.data.pipeline``. Augmentations are Keras core preprocessing layers (and keras-cv's
``RandomCropAndResize``), applied per image inside ``tf.data.Dataset.map``.

References:
    Sohn et al. 2020 (FixMatch: weak = flip + translate 12.5%, strong = RandAugment + Cutout);
    Chen et al. 2020 (SimCLR: random resized crop, flip, colour jitter p=0.8, grayscale p=0.2,
    blur p=0.5); He et al. 2022 (MAE: random resized crop 0.2-1 and flip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasdl.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
VIEW_KINDS = ("weak_strong", "two_weak", "weak")


def as_dataset(data: tf.data.Dataset | tuple[np.ndarray, np.ndarray]) -> tf.data.Dataset:
    """An unbatched ``(image, label)`` dataset from a dataset or an ``(x, y)`` pair of arrays."""
    if isinstance(data, tf.data.Dataset):
        return data
    x, y = data
    return tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.asarray(y)))


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    y = np.fromiter(ds.map(lambda x, y: y).as_numpy_iterator(), dtype=np.int64)
    return y


def choose_labelled(labels: np.ndarray, labels_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``labels_per_class`` examples of every class (stratified, seeded)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < labels_per_class:
            raise UserError(
                f"labels_per_class={labels_per_class} but class {c} has only {len(idx)} examples."
            )
        chosen.append(rng.choice(idx, labels_per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def split_labelled(
    data: tf.data.Dataset | tuple[np.ndarray, np.ndarray],
    labels_per_class: int,
    seed: int = 0,
    unlabelled: str = "all",
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split an unbatched ``(image, int label)`` source into labelled and unlabelled sets.

    Args:
        data: a dataset or an ``(x, y)`` pair of arrays.
        labels_per_class: labels kept per class.
        seed: seed of the choice.
        unlabelled: ``"all"`` (every image, labelled ones included, as in FixMatch) or
            ``"rest"`` (only the images whose label was dropped).

    Returns:
        ``(labelled, unlabelled)``: ``(image, label)`` pairs (cached) and images only.
    """
    if unlabelled not in ("all", "rest"):
        raise UserError(f"unlabelled must be 'all' or 'rest'. Received: {unlabelled!r}")
    if labels_per_class < 1:
        raise UserError(f"labels_per_class must be >= 1. Received: {labels_per_class}")
    ds = as_dataset(data)
    labels = _labels(ds)
    keep = np.zeros(len(labels), bool)
    keep[choose_labelled(labels, labels_per_class, seed)] = True
    keep_t = tf.constant(keep)

    def is_labelled(i, xy):
        return tf.gather(keep_t, i)

    def is_unlabelled(i, xy):
        return tf.logical_not(tf.gather(keep_t, i))

    def pair(i, xy):
        return xy

    def image(i, xy):
        return xy[0]

    indexed = ds.enumerate()
    labelled = indexed.filter(is_labelled).map(pair).cache()
    if unlabelled == "all":
        unl = indexed.map(image)
    else:
        unl = indexed.filter(is_unlabelled).map(image)
    return labelled, unl


def _standardizer(mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable:
    if not mean:
        return lambda x: x
    m = tf.constant(mean, tf.float32)
    s = tf.constant(std, tf.float32)
    return lambda x: (x - m) / s


def _maybe(fn: Callable, prob: float, seed: int) -> Callable:
    if prob >= 1.0:
        return fn
    if prob <= 0.0:
        return lambda x: x
    return lambda x: tf.cond(tf.random.uniform([], seed=seed) < prob, lambda: fn(x), lambda: x)


def cutout(image: tf.Tensor, max_fraction: float = 0.5, fill: float = 0.5) -> tf.Tensor:
    """Grey out a square of side ``U(0, max_fraction) x min(H, W)`` at a uniform centre.

    FixMatch's Cutout (Sohn et al. 2020, table 12; DeVries & Taylor 2017), square clipped at the
    borders, on one ``(H, W, C)`` image in ``[0, 1]``.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.cast(
        tf.random.uniform([], 0.0, max_fraction) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32
    )
    cy = tf.random.uniform([], 0, h, dtype=tf.int32)
    cx = tf.random.uniform([], 0, w, dtype=tf.int32)
    y0, x0 = cy - side // 2, cx - side // 2
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)
    return tf.where(inside[..., None], tf.cast(fill, image.dtype), image)


def weak_view(flip: bool = True, translate: float = 0.125, seed: int = 0) -> Callable:
    """FixMatch's weak augmentation: random horizontal flip and translation up to 12.5%."""
    layers = [keras.layers.RandomTranslation(translate, translate, fill_mode="reflect", seed=seed)]
    if flip:
        layers.insert(0, keras.layers.RandomFlip("horizontal", seed=seed))

    def view(x):
        for layer in layers:
            x = layer(x, training=True)
        return x

    return view


def strong_view(
    flip: bool = True,
    translate: float = 0.125,
    num_ops: int = 2,
    magnitude: float = 0.5,
    cutout_fraction: float = 0.5,
    seed: int = 0,
) -> Callable:
    """FixMatch's strong augmentation: the weak view, RandAugment (2 ops), then Cutout."""
    weak = weak_view(flip, translate, seed)
    ra = keras.layers.RandAugment(value_range=(0, 1), num_ops=num_ops, factor=magnitude, seed=seed)

    def view(x):
        x = ra(weak(x), training=True)
        return cutout(tf.clip_by_value(x, 0.0, 1.0), cutout_fraction)

    return view


def contrastive_view(
    image_size: tuple[int, int],
    channels: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    flip: bool = True,
    jitter_strength: float = 0.5,
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    seed: int = 0,
) -> Callable:
    """SimCLR's augmentation: random resized crop, flip, colour jitter, grayscale, blur.

    Colour jitter has brightness, contrast and saturation ``0.8 s`` and hue ``0.2 s`` for
    strength ``s`` (brightness and contrast only for one-channel images), applied with
    ``jitter_prob``; the Gaussian blur has a kernel of 10% of the image side and sigma in
    [0.1, 2.0].
    """
    import keras_cv  # keras-cv only for what Keras core lacks (DESIGN.md)

    s = float(jitter_strength)
    crop = keras_cv.layers.RandomCropAndResize(
        target_size=tuple(image_size),
        crop_area_factor=tuple(crop_scale),
        aspect_ratio_factor=(3 / 4, 4 / 3),
        seed=seed,
    )
    ops: list[Callable] = [lambda x: crop(x, training=True)]
    if flip:
        fl = keras.layers.RandomFlip("horizontal", seed=seed)
        ops.append(lambda x: fl(x, training=True))
    if s > 0:
        if channels == 3:
            jit = keras.layers.RandomColorJitter(
                value_range=(0, 1),
                brightness_factor=0.8 * s,
                contrast_factor=0.8 * s,
                saturation_factor=(max(0.0, 0.5 - 0.4 * s), min(1.0, 0.5 + 0.4 * s)),
                hue_factor=0.2 * s,
                seed=seed,
            )
            jitter = lambda x: jit(x, training=True)  # noqa: E731
        else:
            br = keras.layers.RandomBrightness(0.8 * s, value_range=(0, 1), seed=seed)
            co = keras.layers.RandomContrast(0.8 * s, value_range=(0, 1), seed=seed)
            jitter = lambda x: co(br(x, training=True), training=True)  # noqa: E731
        ops.append(_maybe(jitter, jitter_prob, seed))
    if grayscale_prob > 0 and channels == 3:
        gray = keras.layers.RandomGrayscale(factor=grayscale_prob, seed=seed)
        ops.append(lambda x: gray(x, training=True))
    if blur_prob > 0:
        k = max(3, int(0.1 * min(image_size)) // 2 * 2 + 1)
        blur = keras.layers.RandomGaussianBlur(
            factor=1.0, kernel_size=k, sigma=(0.1, 2.0), value_range=(0, 1), seed=seed
        )
        ops.append(_maybe(lambda x: blur(x, training=True), blur_prob, seed))

    def view(x):
        for op in ops:
            x = op(x)
        return tf.clip_by_value(x, 0.0, 1.0)

    return view


def _images_only(ds: tf.data.Dataset) -> tf.data.Dataset:
    if isinstance(ds.element_spec, tuple):
        return ds.map(lambda *e: e[0])
    return ds


def _in_unit(view: Callable, mean, std) -> Callable:
    standardize = _standardizer(mean, std)
    return lambda x: standardize(view(x))


def semi_supervised_dataset(
    labelled: tf.data.Dataset,
    unlabelled: tf.data.Dataset,
    batch_size: int,
    num_classes: int,
    mu: int = 7,
    views: str = "weak_strong",
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    flip: bool = True,
    shuffle_buffer: int = 10000,
) -> tf.data.Dataset:
    """Batches ``((x_labelled, y_onehot), views)`` for the semi-supervised methods.

    One epoch is one pass over the (shuffled) unlabelled set in batches of ``mu * batch_size``;
    the labelled set repeats as often as needed. Labelled images get the weak view.

    Args:
        labelled: unbatched ``(image, int label)``.
        unlabelled: unbatched images (or ``(image, label)``, label ignored).
        batch_size: labelled batch size B.
        num_classes: for the one-hot labels.
        mu: unlabelled batch = ``mu * B``.
        views: ``"weak_strong"`` (FixMatch), ``"two_weak"`` (Pi-model, Mean Teacher) or
            ``"weak"`` (pseudo-label).
        seed: shuffling and augmentation seed.
        mean, std: standardization applied after the views (empty: none).
        flip: include horizontal flips in the views (off for digits / text).
        shuffle_buffer: shuffle buffer of the unlabelled stream.
    """
    if views not in VIEW_KINDS:
        raise UserError(f"views must be one of {', '.join(VIEW_KINDS)}. Received: {views!r}")
    weak = _in_unit(weak_view(flip, seed=seed), mean, std)
    strong = _in_unit(strong_view(flip, seed=seed), mean, std)
    make = {
        "weak_strong": lambda x: (weak(x), strong(x)),
        "two_weak": lambda x: (weak(x), weak(x)),
        "weak": lambda x: (weak(x),),
    }[views]
    lab = (
        labelled.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .map(lambda x, y: (weak(x), tf.one_hot(tf.cast(y, tf.int32), num_classes)), AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
    )
    unl = (
        _images_only(unlabelled)
        .shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
        .map(make, AUTOTUNE)
        .batch(mu * batch_size, drop_remainder=True)
    )
    return tf.data.Dataset.zip((lab, unl)).prefetch(AUTOTUNE)


def labelled_batches(
    ds: tf.data.Dataset,
    batch_size: int,
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """Evaluation batches ``(x, y_onehot)`` (standardized like the training views, cached)."""
    standardize = _standardizer(mean, std)
    return (
        ds.map(lambda x, y: (standardize(x), tf.one_hot(tf.cast(y, tf.int32), num_classes)))
        .cache()
        .batch(batch_size)
        .prefetch(AUTOTUNE)
    )


def contrastive_dataset(
    images: tf.data.Dataset,
    batch_size: int,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    **view_kwargs,
) -> tf.data.Dataset:
    """Batches ``(view1, view2)`` of two independent :func:`contrastive_view` s of each image.

    ``view_kwargs`` go to :func:`contrastive_view` (``crop_scale``, ``flip``, ``blur_prob``, ...).
    """
    ds = _images_only(images)
    shape = ds.element_spec.shape
    view = _in_unit(
        contrastive_view((int(shape[0]), int(shape[1])), int(shape[2]), seed=seed, **view_kwargs),
        mean,
        std,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x: (view(x), view(x)), AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def masked_image_dataset(
    images: tf.data.Dataset,
    batch_size: int,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    flip: bool = True,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
) -> tf.data.Dataset:
    """Image batches for MAE: random resized crop (scale 0.2-1) and flip, no colour changes."""
    ds = _images_only(images)
    shape = ds.element_spec.shape
    view = _in_unit(
        contrastive_view(
            (int(shape[0]), int(shape[1])),
            int(shape[2]),
            crop_scale=crop_scale,
            flip=flip,
            jitter_strength=0.0,
            grayscale_prob=0.0,
            blur_prob=0.0,
            seed=seed,
        ),
        mean,
        std,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.map(view, AUTOTUNE).batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
