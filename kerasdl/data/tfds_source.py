"""The ``tfds`` source: a tensorflow-datasets dataset streamed from its TFRecords in ``data_dir``.

Each split is ``builder.as_dataset(split, shuffle_files=False, decoders={image: SkipDecoding()})``:
records are read lazily, in file order (so a seed and an epoch give the same order on every
run), with the image left encoded; :func:`kerasdl.data.decode.decode_split` decodes and crops it
in parallel threads. Nothing is materialised: a split is as large as the disk allows.

Splits: ``data.splits`` names the tfds split behind each of kerasdl's (tfds slicing allowed:
``{train: "train[:90%]", val: "train[90%:]", test: test}``; TFDS "splits and slicing" guide).
Without it, the dataset's own ``train`` / ``validation`` / ``test`` splits are used where they
exist and a missing validation (or test) split is carved from the end of train with
``data.val_split`` (``test_split``), in whole percent.

Labels are read without decoding any image (:func:`split_labels`), for the few-label splits of
the semi-supervised methods and the probes.

References: TFDS ``DatasetBuilder.as_dataset``, ``tfds.decode.SkipDecoding``,
``tfds.testing.mock_data`` (the tests run this code path on generated examples).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from kerasdl.config.schema import DataConfig
from kerasdl.data.raw import RawSplits
from kerasdl.errors import UserError

_READ_ERRORS = (AssertionError, FileNotFoundError, KeyError, ValueError, tf.errors.NotFoundError)


def _builder(cfg: DataConfig) -> Any:
    import tensorflow_datasets as tfds

    name = cfg.name or ""
    try:
        builder = tfds.builder(name, data_dir=cfg.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"data.name: unknown tensorflow-datasets name {name!r} "
            f"(see tfds.list_builders(); {len(tfds.list_builders())} known)"
        ) from None
    if cfg.download:
        builder.download_and_prepare()
    where = cfg.data_dir or os.path.expanduser("~/tensorflow_datasets")
    try:  # as_dataset, not is_prepared(): it also honours tfds.testing.mock_data
        builder.as_dataset(split="train")
    except _READ_ERRORS:
        raise UserError(
            f"tfds dataset {name!r} is not prepared in {where}; prepare it there (tfds build "
            f"{name} --data_dir {where}), or set data.download: true where the network allows it"
        ) from None
    return builder


def _default_splits(cfg: DataConfig, builder: Any) -> dict[str, str]:
    """The dataset's own splits, a missing val/test carved from the end of train."""
    available = set(builder.info.splits.keys())
    if not available:  # no metadata (e.g. tfds.testing.mock_data): probe the usual split names
        for split in ("train", "validation", "test"):
            try:
                builder.as_dataset(split=split)
                available.add(split)
            except _READ_ERRORS + (tf.errors.InvalidArgumentError,):
                continue
    if "train" not in available:
        raise UserError(
            f"tfds dataset {cfg.name!r} has no train split. Found: {sorted(available)}; name "
            "the splits to use in data.splits"
        )
    names: dict[str, str] = {}
    train_pct = 100
    for k, own, frac in (("val", "validation", cfg.val_split), ("test", "test", cfg.test_split)):
        if own in available:
            names[k] = own
        elif int(round(100 * frac)) > 0:
            pct = int(round(100 * frac))
            names[k] = f"train[{train_pct - pct}%:{train_pct}%]"
            train_pct -= pct
    names["train"] = f"train[:{train_pct}%]" if train_pct < 100 else "train"
    return names


def _read(builder: Any, image_key: str, split: str, key: str) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    try:
        return builder.as_dataset(
            split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
        )
    except _READ_ERRORS + (tf.errors.InvalidArgumentError,) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"data.splits.{key}: tfds dataset {builder.name!r} has no split {split!r} ({reason})"
        ) from None


def split_labels(builder: Any, image_key: str, split: str) -> np.ndarray:
    """The labels of a tfds split in order, read without decoding its images."""
    ds = _read(builder, image_key, split, "train").map(
        lambda ex: ex["label"], num_parallel_calls=tf.data.AUTOTUNE
    )
    return np.fromiter(ds.batch(4096).unbatch().as_numpy_iterator(), dtype=np.int64)


def load_tfds_source(cfg: DataConfig, seed: int) -> RawSplits:
    """A tensorflow-datasets dataset read from ``data_dir`` (prepared beforehand), streamed.

    Raises:
        kerasdl.UserError: unknown name, dataset not prepared in ``data_dir``, no image/label
            features, unknown split.
    """
    import tensorflow_datasets as tfds

    builder = _builder(cfg)
    info = builder.info
    image_key = next(
        (k for k, v in info.features.items() if isinstance(v, tfds.features.Image)), None
    )
    if image_key is None or "label" not in info.features:
        raise UserError(f"tfds dataset {cfg.name!r} has no image and label features")
    if cfg.splits is not None:
        names = {k: v for k, v in cfg.splits.model_dump().items() if v}
    else:
        names = _default_splits(cfg, builder)

    def pair(ex: dict) -> tuple[tf.Tensor, tf.Tensor]:
        return ex[image_key], tf.cast(ex["label"], tf.int64)

    splits = {k: _read(builder, image_key, s, k).map(pair) for k, s in names.items()}
    sizes = {}
    for k, s in names.items():
        try:
            sizes[k] = int(info.splits[s].num_examples)
        except _READ_ERRORS:  # no metadata (mock data)
            continue
    feature = info.features[image_key]
    return RawSplits(
        splits,
        list(info.features["label"].names),
        tuple(feature.shape),
        sizes,
        encoded=True,
        in_memory=False,
        labels=lambda k: split_labels(builder, image_key, names[k]),
    )
