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


# --- streaming sources (issue 20) -------------------------------------------------------------


def _streamed_folder(tmp_path: Path, **kw) -> DataConfig:
    """The test image folder (20 images at 20x24, one corrupt file) read at 8x8."""
    _write_folder(tmp_path / "imgs")
    return DataConfig(source="folder", path=str(tmp_path / "imgs"), image_size=8, **kw)


def test_folder_source_streams_from_the_files(tmp_path: Path) -> None:
    """Nothing is decoded into memory beforehand: an image rewritten after load_data is read
    as it is when the split is iterated (no cache), and the splits are lists of paths."""
    from PIL import Image

    cfg = _streamed_folder(tmp_path, val_split=0.2, test_split=0.2, cache=False)
    bundle = load_data(cfg, seed=0)
    assert not bundle.in_memory and not bundle.cacheable("train", cfg.cache)
    before = [np.asarray(x) for x, _ in bundle.splits["test"]]
    for f in (tmp_path / "imgs").rglob("*.png"):
        Image.new("RGB", (24, 20), (255, 255, 255)).save(f)
    after = [np.asarray(x) for x, _ in bundle.splits["test"]]
    assert all(a.min() == pytest.approx(1.0) for a in after)  # the files as they are now
    assert not all(b.min() == pytest.approx(1.0) for b in before)
    np.testing.assert_array_equal(bundle.labels("test"), _labels(bundle.splits["test"]))


def test_unverified_folder_drops_corrupt_files_while_streaming(tmp_path: Path) -> None:
    cfg = _streamed_folder(tmp_path, val_split=0.0, test_split=0.0, verify_images=False)
    bundle = load_data(cfg, seed=0)
    assert bundle.sizes == {"train": 21}  # listed, not checked
    assert len(_labels(bundle.splits["train"])) == 20  # broken.jpg dropped on the way


def test_tfds_streams_the_splits_the_recipe_names(tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    from kerasdl.config.schema import RecipeConfig
    from kerasdl.data.datasets import make_datasets

    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        cfg = DataConfig(
            source="tfds",
            name="cifar10",
            splits={"train": "train[:90%]", "val": "test"},
            image_size=16,
        )
        bundle = load_data(cfg, seed=0)
        assert set(bundle.splits) == {"train", "val"} and not bundle.in_memory
        assert bundle.size("train") == 12 and not bundle.cacheable("train")  # size unknown
        recipe = RecipeConfig(data=cfg, training={"batch_size": 4})
        x, y = next(iter(make_datasets(recipe, bundle)["train"]))
        assert x.shape == (4, 16, 16, 3) and y.shape == (4, 10)
        labels = bundle.labels("train")  # read without decoding the images
        np.testing.assert_array_equal(labels, _labels(bundle.splits["train"]))


def test_tfds_unknown_split_is_one_user_error() -> None:
    from kerasdl.data.tfds_source import _read

    class Builder:
        name = "cifar10"

        def as_dataset(self, **kw):
            raise ValueError("Unknown split 'valid'. Should be one of ['test', 'train'].")

    with pytest.raises(UserError, match=r"data.splits.val: .*'cifar10' has no split 'valid' "):
        _read(Builder(), "image", "valid", "val")


def test_center_window_is_torchvisions_resize_then_center_crop() -> None:
    from kerasdl.data.decode import center_window

    # Resize(256) of a 500x375 image scales by 256/375; CenterCrop(224) keeps 328x328 of it.
    top, left, h, w = (int(v) for v in center_window(tf.constant([500, 375]), (224, 224), 0.875))
    assert (h, w) == (328, 328) and (top, left) == (86, 23)


def test_random_resized_window_is_seeded_and_within_the_ranges() -> None:
    from kerasdl.data.decode import random_resized_window

    hw = tf.constant([300, 400])
    window = tf.function(lambda s: random_resized_window(hw, s, [0.08, 1.0], [3 / 4, 4 / 3]))
    windows = []
    for s in range(60):
        top, left, h, w = (int(v) for v in window(tf.constant([s, 0])))
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        assert 0.07 <= h * w / 120_000 <= 1.0 and 0.7 <= w / h <= 1.4
        windows.append((top, left, h, w))
    assert len(set(windows)) > 55  # a fresh window per seed
    assert tuple(int(v) for v in window(tf.constant([7, 0]))) == windows[7]  # replayed


def test_jpeg_is_decoded_inside_the_window_only_with_the_same_pixels() -> None:
    from kerasdl.data.decode import decode_window

    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    smooth = tf.cast(tf.image.resize(image, (40, 60), antialias=True), tf.uint8)
    for data in (tf.io.encode_jpeg(smooth, quality=95), tf.io.encode_png(smooth)):
        full = tf.io.decode_image(data, channels=3, expand_animations=False)
        got = decode_window(data, 3, lambda hw: (tf.constant(5), tf.constant(8), 20, 30))
        assert got.shape == (20, 30, 3)
        diff = np.abs(np.asarray(got, int) - np.asarray(full[5:25, 8:38], int))
        assert diff.mean() < 2.0  # JPEG: libjpeg's cropped decode; PNG: exact
    assert int(np.abs(np.asarray(got, int) - np.asarray(full[5:25, 8:38], int)).max()) == 0


def test_random_crops_replay_per_seed_and_change_every_pass() -> None:
    from kerasdl.config.schema import CropConfig
    from kerasdl.data.decode import decode_split
    from kerasdl.data.preprocess import PreprocessSpec

    rng = np.random.default_rng(1)
    encoded = [
        tf.io.encode_jpeg(tf.constant(rng.integers(0, 255, (30 + i, 50, 3), dtype=np.uint8)))
        for i in range(6)
    ]
    raw = tf.data.Dataset.from_tensor_slices((tf.stack(encoded), tf.range(6, dtype=tf.int64)))
    spec = PreprocessSpec((16, 16), 3)

    def crops(seed: int) -> tf.data.Dataset:
        return decode_split(raw, (None, None, 3), spec, CropConfig(), "random_resized", seed)

    ds = crops(3)
    first = np.stack([x for x, _ in ds])
    second = np.stack([x for x, _ in ds])
    assert first.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(first, np.stack([x for x, _ in crops(3)]))  # same seed
    assert not np.array_equal(first, second)  # a new draw every pass


def test_crop_and_split_keys_are_checked() -> None:
    from pydantic import ValidationError

    bad = [
        dict(source="digits", splits={"train": "train"}),
        dict(source="digits", crop={"train": "random_resized"}),
        dict(source="tfds", name="x", crop={"train": "random_resized"}),  # needs image_size
        dict(source="tfds", name="x", image_size=8, cache=True, crop={"train": "random_resized"}),
        dict(source="tfds", name="x", crop={"scale": [0.5, 0.1]}),
    ]
    for kw in bad:
        with pytest.raises((ValidationError, UserError)):
            DataConfig(**kw)


def test_streamed_probes_equal_the_in_memory_probes(tmp_path: Path) -> None:
    """On a streamed source the probes keep features, not images, and score what the in-memory
    protocol scores on the same images."""
    import tensorflow_datasets as tfds

    from kerasdl.methods.kinds import MethodData, probe_metrics
    from kerasdl.methods.params import SimCLRParams
    from kerasdl.registry import create_model

    with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path)):
        cfg = DataConfig(
            source="tfds", name="cifar10", image_size=8, splits={"train": "train", "test": "test"}
        )
        bundle = load_data(cfg, seed=0)
        model = create_model("simple_cnn", num_classes=10, input_shape=(8, 8, 3), filters=[4])
        p = SimCLRParams(probe_labels_per_class=1)
        streamed = probe_metrics(model, p, MethodData(bundle.splits, 8, 10, 0, bundle=bundle))
        in_memory = probe_metrics(model, p, MethodData(bundle.splits, 8, 10, 0))
        classes = len(np.unique(bundle.labels("train")))
    assert streamed["probe_train_examples"] == classes
    for k in ("linear_probe_accuracy", "knn_accuracy", "probe_train_examples"):
        assert streamed[k] == pytest.approx(in_memory[k], abs=1e-6), k


def test_streamed_training_order_is_a_function_of_seed_and_epoch(tmp_path: Path) -> None:
    """What a resume relies on (run.deterministic): epoch e of a streamed source is shuffled the
    same way by a fresh pipeline, and differently from epoch e + 1."""
    from kerasdl.config.schema import RecipeConfig
    from kerasdl.data.datasets import make_datasets

    cfg = _streamed_folder(tmp_path, val_split=0.0, test_split=0.0)
    recipe = RecipeConfig(data=cfg, training={"batch_size": 5}, run={"seed": 3})

    def order(epoch: int) -> list[float]:
        bundle = load_data(cfg, seed=3)
        ds = make_datasets(recipe, bundle, epoch=tf.Variable(epoch))["train"]
        return [float(x[0, 0, 0, 0]) for x, _ in ds for x in tf.split(x, len(x))]

    assert order(4) == order(4)
    assert order(4) != order(5)


def test_random_crops_and_deterministic_runs_exclude_each_other() -> None:
    from pydantic import ValidationError

    from kerasdl.config.schema import RecipeConfig

    data = dict(source="tfds", name="cifar10", image_size=8, crop={"train": "random_resized"})
    with pytest.raises((ValidationError, UserError), match="run.deterministic"):
        RecipeConfig(data=data, run={"deterministic": True})
