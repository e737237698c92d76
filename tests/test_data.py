"""Data sources and the tf.data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasdl.config import DataConfig
from kerasdl.data import load_data
from kerasdl.data.pipeline import batch_dataset, standardizer
from kerasdl.errors import UserError


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    return np.array([int(y) for _, y in ds])


def test_digits_split_is_stratified_seeded_and_disjoint() -> None:
    a = load_data(DataConfig(source="digits", image_size=16, channels=3), seed=0)
    b = load_data(DataConfig(source="digits", image_size=16, channels=3), seed=0)
    assert a.sizes == {"train": 1257, "val": 180, "test": 360}
    assert sum(a.sizes.values()) == 1797
    assert a.spec.input_shape == (16, 16, 3) and a.num_classes == 10
    x, _ = next(iter(a.splits["train"]))
    assert x.shape == (16, 16, 3) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    np.testing.assert_array_equal(_labels(a.splits["test"]), _labels(b.splits["test"]))
    counts = np.bincount(_labels(a.splits["test"]), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 per class
    train_px = {np.asarray(x).tobytes() for x, _ in a.splits["train"]}
    test_px = [np.asarray(x).tobytes() for x, _ in a.splits["test"]]
    assert sum(t in train_px for t in test_px) < 5  # only true duplicates in the data set


def test_pipeline_batches_one_hot_reshuffles_and_standardizes() -> None:
    bundle = load_data(DataConfig(source="digits", image_size=8), seed=0)
    ds = batch_dataset(
        bundle.splits["train"],
        50,
        training=True,
        num_classes=10,
        seed=1,
        standardize=standardizer([0.5], [0.25]),
    )
    x1, y1 = next(iter(ds))
    x2, y2 = next(iter(ds))
    assert x1.shape == (50, 8, 8, 1) and y1.shape == (50, 10)
    np.testing.assert_allclose(tf.reduce_sum(y1, axis=1), 1.0)
    assert not np.array_equal(y1, y2)  # reshuffled each epoch
    assert float(tf.reduce_min(x1)) == pytest.approx(-2.0)  # (0 - 0.5) / 0.25


def test_npz_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (40, 12, 12, 3), dtype=np.uint8),
        y_train=np.arange(40) % 4,
        x_test=rng.integers(0, 255, (8, 12, 12, 3), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    bundle = load_data(DataConfig(source="npz", path=str(path), val_split=0.25), seed=0)
    assert bundle.sizes == {"train": 30, "val": 10, "test": 8}
    assert bundle.num_classes == 4 and bundle.spec.input_shape == (12, 12, 3)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 2)))
    with pytest.raises(UserError, match="must hold arrays x_train and y_train"):
        load_data(DataConfig(source="npz", path=str(bad)))


def test_synthetic_source() -> None:
    cfg = DataConfig(
        source="synthetic",
        image_size=20,
        channels=3,
        synthetic={"num_examples": 64, "num_classes": 4},
    )
    bundle = load_data(cfg, seed=3)
    assert bundle.spec.input_shape == (20, 20, 3) and bundle.num_classes == 4
    assert sum(bundle.sizes.values()) == 64


def _write_folder(root: Path) -> None:
    from tiny_models import write_image_folder

    write_image_folder(root, 10, (20, 24))


def test_folder_source_skips_or_stops_on_corrupt_image(tmp_path: Path, capsys) -> None:
    _write_folder(tmp_path / "imgs")
    cfg = DataConfig(
        source="folder", path=str(tmp_path / "imgs"), image_size=16, val_split=0.2, test_split=0.2
    )
    bundle = load_data(cfg, seed=0)
    assert bundle.class_names == ["cat", "dog"]
    assert sum(bundle.sizes.values()) == 20
    assert "broken.jpg" in capsys.readouterr().err
    x, _ = next(iter(bundle.splits["train"]))
    assert x.shape == (16, 16, 3)
    strict = DataConfig(source="folder", path=str(tmp_path / "imgs"), on_corrupt="error")
    with pytest.raises(UserError, match="corrupt or unreadable image: .*broken.jpg"):
        load_data(strict, seed=0)


def test_tfds_source_under_mock_data(tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30, data_dir=str(tmp_path)):
        cfg = DataConfig(source="tfds", name="mnist", image_size=14, val_split=0.2)
        bundle = load_data(cfg, seed=0)
        assert bundle.num_classes == 10
        assert set(bundle.splits) == {"train", "val", "test"}
        x, y = next(iter(bundle.splits["train"]))
        assert x.shape == (14, 14, 1) and 0 <= int(y) < 10
        ds = batch_dataset(bundle.splits["val"], 4, training=False, num_classes=10)
        assert next(iter(ds))[1].shape == (4, 10)


def test_tfds_not_prepared_is_a_clear_error(tmp_path: Path) -> None:
    cfg = DataConfig(source="tfds", name="mnist", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="not prepared"):
        load_data(cfg)


def test_too_few_images_for_a_stratified_split_is_a_user_error() -> None:
    from kerasdl.data.sources import stratified_split

    with pytest.raises(UserError, match="too few images"):
        stratified_split(np.arange(8) % 4, 0.1, 0.2, seed=0)
