"""The tf.data pipeline: preprocess, cache, shuffle, batch, augment, prefetch.

``batch_dataset`` turns an unbatched ``(image, label)`` dataset (already preprocessed to the
model's size by :func:`kerasdl.data.load_data`) into training or evaluation batches with one-hot
labels. Augmentation runs on batches in graph mode after batching (so MixUp/CutMix can mix within
a batch); standardization (``data.mean``/``data.std``) is applied after augmentation, because the
augmentation ops work on [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
AugmentFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def standardizer(mean: list[float], std: list[float]) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A function ``x -> (x - mean) / std`` or None when no standardization is configured."""
    if not mean:
        return None
    m = tf.constant(mean, tf.float32)
    s = tf.constant(std, tf.float32)
    return lambda x: (x - m) / s


def standardize_array(
    x: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
    """``(x - mean) / std`` on NumPy images (``x`` unchanged when no mean is configured): the
    same standardisation as :func:`standardizer`, for code that works on arrays (probes)."""
    if not mean:
        return x
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def batch_dataset(
    ds: tf.data.Dataset,
    batch_size: int,
    *,
    training: bool,
    num_classes: int,
    seed: int = 0,
    augment: AugmentFn | None = None,
    standardize: Callable[[tf.Tensor], tf.Tensor] | None = None,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
    drop_remainder: bool = False,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, one_hot_labels)``.

    Args:
        ds: unbatched ``(image float32 HWC in [0, 1], int label)``.
        batch_size: global batch size.
        training: shuffle (reshuffled every epoch, seeded) and augment.
        num_classes: depth of the one-hot labels.
        seed: shuffle seed.
        augment: batched ``fn(images, labels) -> (images, labels)`` (training only).
        standardize: ``x -> (x - mean) / std`` applied last.
        cache: cache the preprocessed examples in memory before shuffling.
        shuffle_buffer: shuffle buffer size.
        drop_remainder: drop the last partial batch.
        epoch: a variable holding the epoch about to run, read each time the dataset is
            iterated: the shuffle order is then seeded by ``(seed, epoch)``, so epoch ``e`` sees
            the same order whether or not the run was resumed in between. Without it the order
            depends on how often this dataset object was iterated.
    """
    ds = ds.map(
        lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)),
        num_parallel_calls=AUTOTUNE,
    )
    if cache:
        ds = ds.cache()
    if training and epoch is not None:
        ordered = ds

        def one_epoch(_: tf.Tensor) -> tf.data.Dataset:
            # The graph-level seed of this function only: TensorFlow compares (graph seed, op
            # seed) with (0, 0) in Python, which fails for a tensor op seed when the global
            # seed is 0 (run.seed: 0).
            tf.compat.v1.get_default_graph().seed = int(seed) + 1
            epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
            return ordered.shuffle(shuffle_buffer, seed=epoch_seed)

        ds = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
        known = int(ordered.cardinality())
        if known >= 0:  # flat_map hides it; fit's progress bar and epoch length need it
            ds = ds.apply(tf.data.experimental.assert_cardinality(known))
    elif training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    if training and augment is not None:
        # Sequential on purpose: the ops draw from stateful seeded generators, and parallel calls
        # would take their states in a different order each run (the ops are already vectorized
        # over the batch, so this costs little).
        ds = ds.map(augment)
    if standardize is not None:
        ds = ds.map(lambda x, y: (standardize(x), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
