"""Data for the semi- and self-supervised methods: label splits, unlabelled streams and views.

* :func:`split_labelled` keeps ``N`` labels per class (stratified, seeded) and returns the
  labelled set and the unlabelled set (all training images by default, as in FixMatch).
* :func:`semi_supervised_dataset` zips a repeated labelled stream (batch ``B``) with one pass over
  the unlabelled stream (batch ``mu * B``), each unlabelled image expanded into the views the
  method needs: ``((x_labelled, y_onehot), (view, ...))``.
* :func:`contrastive_dataset` yields ``(view1, view2)`` batches for SimCLR / MoCo and
  :func:`masked_image_dataset` single-view batches for MAE.

A view is an augmentation list of the one augmentation system (:mod:`kerasdl.data.augment`): the
papers' views are named in :data:`VIEWS` (``fixmatch_weak``, ``fixmatch_strong``, ``simclr``,
``mae``), a method's recipe keys (``flip``, ``crop_scale``, ``jitter_strength``, ...) edit them
(:func:`~kerasdl.data.augment_specs.view_specs`), and :func:`build_view` builds one with
:func:`~kerasdl.data.augment.build_augment`. Every view of a dataset has its own generators, so
the two views of an image are independent draws; every operation draws per image. Views run on
batches, in one sequential ``map`` (the same seed replays the same views), on images in
``[0, 1]`` (what ``kerasdl.data.load_data`` yields); when the recipe standardizes
(``data.mean`` / ``data.std``), the views are standardized after augmentation, as in
``kerasdl.data.pipeline``.

References:
    Sohn et al. 2020 (FixMatch: weak = flip + translate 12.5%, strong = RandAugment + Cutout);
    Chen et al. 2020 (SimCLR: random resized crop, flip, colour jitter p=0.8, grayscale p=0.2,
    blur p=0.5); He et al. 2022 (MAE: random resized crop 0.2-1 and flip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kerasdl.data.augment import build_augment
from kerasdl.data.augment_specs import VIEWS, view_specs  # noqa: F401 (VIEWS re-exported)
from kerasdl.data.pipeline import standardizer
from kerasdl.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
VIEW_KINDS = ("weak_strong", "two_weak", "weak")
#: a view: a name of :data:`VIEWS` or an augmentation list
View = str | Sequence[dict]


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
    labels: np.ndarray | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split an unbatched ``(image, int label)`` source into labelled and unlabelled sets.

    The labelled examples are ``labels_per_class`` of every class drawn by
    :func:`choose_labelled` (stratified, seeded), from the labels alone: a streamed split
    (``labels`` given, e.g. :meth:`kerasdl.data.DataBundle.labels`, read without decoding) is
    not decoded for the choice; the labelled set is then filtered from one pass over it and
    cached, and the unlabelled set streams.

    Args:
        data: a dataset or an ``(x, y)`` pair of arrays.
        labels_per_class: labels kept per class.
        seed: seed of the choice.
        unlabelled: ``"all"`` (every image, labelled ones included, as in FixMatch) or
            ``"rest"`` (only the images whose label was dropped).
        labels: the labels of ``data`` in order, if known (default: read from ``data``).

    Returns:
        ``(labelled, unlabelled)``: ``(image, label)`` pairs (cached) and images only.
    """
    if unlabelled not in ("all", "rest"):
        raise UserError(f"unlabelled must be 'all' or 'rest'. Received: {unlabelled!r}")
    if labels_per_class < 1:
        raise UserError(f"labels_per_class must be >= 1. Received: {labels_per_class}")
    ds = as_dataset(data)
    labels = _labels(ds) if labels is None else np.asarray(labels, np.int64)
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
    """:func:`kerasdl.data.pipeline.standardizer`, the identity when none is configured."""
    return standardizer(list(mean or []), list(std or [])) or (lambda x: x)


def build_view(view: View, seed: int = 0, **keys) -> Callable[[tf.Tensor], tf.Tensor]:
    """A view as a function of images.

    Args:
        view: a name of :data:`VIEWS` or an augmentation list (validated as a view).
        seed: seed of the view's generators (operation ``i`` gets its own, as in
            :func:`~kerasdl.data.augment.build_augment`); every call draws anew.
        **keys: recipe keys that edit a named view (``flip``, ``crop_scale``,
            ``jitter_strength``, ``jitter_prob``, ``grayscale_prob``, ``blur_prob``; see
            :func:`~kerasdl.data.augment_specs.view_specs`).

    Returns:
        ``fn(images) -> images`` on a batch ``(B, H, W, C)`` or one image ``(H, W, C)`` of a
        known size, float32 in [0, 1], for ``tf.data.Dataset.map`` or eager use.

    Example:
        >>> strong = build_view("fixmatch_strong", seed=0, flip=False)
        >>> ds = images.batch(64).map(lambda u: (weak(u), strong(u)))  # doctest: +SKIP
    """
    fn = build_augment(view_specs(view, **keys), seed=seed, num_classes=1)

    def apply(images: tf.Tensor) -> tf.Tensor:
        single = images.shape.rank == 3
        batch = tf.cast(images[None] if single else images, tf.float32)
        out, _ = fn(batch, tf.zeros(tf.stack([tf.shape(batch)[0], 1])))
        out = tf.ensure_shape(out, batch.shape)
        return out[0] if single else out

    return apply


def _view_seed(seed: int, slot: int) -> int:
    """Seed of the ``slot``-th view of a dataset built with ``seed`` (distinct for seed + 1)."""
    return 8 * int(seed) + slot


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
    weak: View = "fixmatch_weak",
    strong: View = "fixmatch_strong",
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
        flip: include horizontal flips in the named views (off for digits / text).
        shuffle_buffer: shuffle buffer of the unlabelled stream.
        weak, strong: the weak and strong views (names of :data:`VIEWS` or augmentation lists).
    """
    if views not in VIEW_KINDS:
        raise UserError(f"views must be one of {', '.join(VIEW_KINDS)}. Received: {views!r}")

    def view(spec: View, slot: int) -> Callable:
        return _in_unit(build_view(spec, _view_seed(seed, slot), flip=flip), mean, std)

    weak_l, weak_u = view(weak, 0), view(weak, 1)
    second = {"weak_strong": (strong, 2), "two_weak": (weak, 3)}.get(views)
    other = view(*second) if second else None

    def make(u: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (weak_u(u), other(u)) if other else (weak_u(u),)

    lab = (
        labelled.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(lambda x, y: (weak_l(x), tf.one_hot(tf.cast(y, tf.int32), num_classes)))
    )
    unl = (
        _images_only(unlabelled)
        .shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
        .batch(mu * batch_size, drop_remainder=True)
        .map(make)
    )
    return tf.data.Dataset.zip((lab, unl)).prefetch(AUTOTUNE)


def labelled_batches(
    ds: tf.data.Dataset,
    batch_size: int,
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cache: bool = True,
) -> tf.data.Dataset:
    """Evaluation batches ``(x, y_onehot)`` (standardized like the training views; cached in
    memory unless ``cache`` is false, for splits too large for it)."""
    standardize = _standardizer(mean, std)
    ds = ds.map(lambda x, y: (standardize(x), tf.one_hot(tf.cast(y, tf.int32), num_classes)))
    return (ds.cache() if cache else ds).batch(batch_size).prefetch(AUTOTUNE)


def contrastive_dataset(
    images: tf.data.Dataset,
    batch_size: int,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    view: View = "simclr",
    **keys,
) -> tf.data.Dataset:
    """Batches ``(view1, view2)``: two independent draws of ``view`` for each image.

    Args:
        images: unbatched images (or ``(image, label)``, label ignored).
        batch_size: images per batch (the last partial batch is dropped).
        seed: shuffling and augmentation seed.
        mean, std: standardization applied after the views (empty: none).
        shuffle, shuffle_buffer: shuffle the images every epoch.
        view: a name of :data:`VIEWS` or an augmentation list (default SimCLR's).
        **keys: the method's keys that edit a named view: ``crop_scale``, ``flip``,
            ``jitter_strength``, ``jitter_prob``, ``grayscale_prob``, ``blur_prob``.
    """
    ds = _images_only(images)
    first = _in_unit(build_view(view, _view_seed(seed, 0), **keys), mean, std)
    second = _in_unit(build_view(view, _view_seed(seed, 1), **keys), mean, std)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True).map(lambda x: (first(x), second(x)))
    return ds.prefetch(AUTOTUNE)


def masked_image_dataset(
    images: tf.data.Dataset,
    batch_size: int,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_scale: tuple[float, float] | None = None,
    flip: bool = True,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    view: View = "mae",
) -> tf.data.Dataset:
    """Image batches for MAE: ``view`` of every image (default MAE's: random resized crop with
    ``crop_scale`` 0.2-1 and flip, no colour changes; ``view=[]`` for plain images)."""
    ds = _images_only(images)
    apply = _in_unit(
        build_view(view, _view_seed(seed, 0), crop_scale=crop_scale, flip=flip), mean, std
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=True).map(apply).prefetch(AUTOTUNE)
