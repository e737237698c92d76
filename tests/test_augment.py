"""Data augmentation: every op in tf.data graph mode, the papers' formulas, validation, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from kerasdl.data import augment_policies as P
from kerasdl.data.augment import (
    AUGMENT_NAMES,
    build_augment,
    compute_pca_stats,
    stats_required,
    validate_augment,
)
from kerasdl.data.augment_specs import MIXES_LABELS
from kerasdl.errors import UserError

RNG = np.random.RandomState(0)
IMAGES = RNG.rand(8, 12, 12, 3).astype("float32")
LABELS = np.eye(4, dtype="float32")[np.arange(8) % 4]
STATS = compute_pca_stats(IMAGES)


def run(fn, images, labels, batch=4):
    """Map ``fn`` over batches of a tf.data pipeline (graph mode); return all outputs."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).map(fn)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_names_and_defaults():
    assert len(AUGMENT_NAMES) == len(set(AUGMENT_NAMES)) == 25
    specs = validate_augment([{"name": n} for n in AUGMENT_NAMES])
    assert [s["name"] for s in specs] == list(AUGMENT_NAMES)
    by_name = {s["name"]: s for s in specs}
    assert by_name["cutout"] == {
        "name": "cutout",
        "p": 1.0,
        "size": 0.5,
        "num_holes": 1,
        "fill": 0.0,
    }
    assert by_name["random_erasing"]["p"] == 0.5  # Zhong et al.'s default
    assert by_name["random_resized_crop"]["scale"] == [0.08, 1.0]
    assert by_name["gaussian_blur"]["sigma"] == [0.1, 2.0]
    assert by_name["randaugment"]["magnitude_sampling"] == "fixed"
    assert validate_augment([{"name": "cutout", "size": [0, 0.5]}])[0]["size"] == [0.0, 0.5]
    assert by_name["cutmix"]["alpha"] == 1.0
    assert by_name["pca_color"]["std"] == 0.1
    assert validate_augment(["flip"]) == validate_augment([{"name": "flip"}])
    assert stats_required(specs) and not stats_required([{"name": "flip"}])


@pytest.mark.parametrize("name", AUGMENT_NAMES)
def test_every_op_in_graph_mode(name):
    channels = 1 if name in ("autoaugment", "color_jitter", "pca_color") else 3
    images = IMAGES[..., :channels]
    stats = compute_pca_stats(images)
    fn = build_augment([{"name": name, "p": 1.0}], seed=3, num_classes=4, stats=stats)
    x, y = run(fn, images, LABELS)
    assert x.shape == images.shape and x.dtype == np.float32
    assert y.shape == LABELS.shape and y.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert not np.allclose(x, images), "the augmentation changed nothing"
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    if name not in MIXES_LABELS:
        np.testing.assert_array_equal(y, LABELS)


@pytest.mark.parametrize("name", ["saturation", "hue"])
def test_saturation_and_hue_are_identity_on_one_channel(name):
    fn = build_augment([{"name": name}], seed=0, num_classes=4)
    x, _ = run(fn, IMAGES[..., :1], LABELS)
    np.testing.assert_array_equal(x, IMAGES[..., :1])


def test_randomness_differs_between_batches_and_epochs_and_seed_reproduces():
    specs = [
        {"name": "flip"},
        {"name": "random_crop", "padding": 2},
        {"name": "cutout", "size": 0.25},
        {"name": "gaussian_noise", "std": 0.05},
        {"name": "mixup", "alpha": 0.4},
        {"name": "cutmix", "p": 0.5},
    ]
    same = np.repeat(IMAGES[:4], 2, axis=0)  # batch 2 repeats batch 1 exactly
    labels = np.repeat(LABELS[:4], 2, axis=0)
    order = np.r_[0:8:2, 1:8:2]
    same, labels = same[order], labels[order]
    fn = build_augment(specs, seed=11, num_classes=4)
    ds = tf.data.Dataset.from_tensor_slices((same, labels)).batch(4).map(fn)
    epoch1 = np.concatenate([x.numpy() for x, _ in ds])
    epoch2 = np.concatenate([x.numpy() for x, _ in ds])
    assert not np.allclose(epoch1[:4], epoch1[4:]), "two batches got the same augmentation"
    assert not np.allclose(epoch1, epoch2), "two epochs got the same augmentation"
    fn2 = build_augment(specs, seed=11, num_classes=4)
    ds2 = tf.data.Dataset.from_tensor_slices((same, labels)).batch(4).map(fn2)
    again1 = np.concatenate([x.numpy() for x, _ in ds2])
    again2 = np.concatenate([x.numpy() for x, _ in ds2])
    np.testing.assert_array_equal(again1, epoch1)
    np.testing.assert_array_equal(again2, epoch2)
    fn3 = build_augment(specs, seed=12, num_classes=4)
    ds3 = tf.data.Dataset.from_tensor_slices((same, labels)).batch(4).map(fn3)
    assert not np.allclose(np.concatenate([x.numpy() for x, _ in ds3]), epoch1)


def _constant_batch(n=8, size=16):
    """Image k is constant with value v_k and label k: any mix is readable from the pixels."""
    values = np.linspace(0.1, 0.9, n).astype("float32")
    images = np.broadcast_to(values[:, None, None, None], (n, size, size, 3)).copy()
    return values, images, np.eye(n, dtype="float32")


def test_mixup_label_is_the_lambda_mix_of_the_images():
    values, images, labels = _constant_batch()
    fn = build_augment([{"name": "mixup", "alpha": 1.0}], seed=5, num_classes=8)
    x, y = run(fn, images, labels, batch=8)
    # x_i = lam x_i + (1 - lam) x_j and y_i = lam e_i + (1 - lam) e_j  =>  x_i == y_i . v
    np.testing.assert_allclose(
        x, np.broadcast_to((y @ values)[:, None, None, None], x.shape), atol=1e-5
    )
    lam = y[np.arange(8), np.arange(8)]
    assert ((lam > 0.01) & (lam < 0.99)).any(), "no image was mixed"


def test_cutmix_label_weight_equals_pasted_area_fraction():
    values, images, labels = _constant_batch(n=16, size=10)
    fn = build_augment([{"name": "cutmix", "alpha": 1.0}], seed=7, num_classes=16)
    x, y = run(fn, images, labels, batch=16)
    x = x[..., 0]
    for i in range(16):
        own = np.isclose(x[i], values[i])
        partner = np.argmax(np.where(np.arange(16) == i, -1, y[i]))
        if y[i, i] < 1.0:
            pasted = np.isclose(x[i], values[partner])
            assert (own | pasted).all()
            assert y[i, i] == pytest.approx(own.mean(), abs=1e-6)
            assert y[i, partner] == pytest.approx(pasted.mean(), abs=1e-6)
            rows, cols = np.where(pasted)
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert (y.max(axis=1) < 1.0).sum() >= 8, "too few images were mixed"


def test_compute_pca_stats_matches_numpy_and_streams():
    cov = np.array([[0.04, 0.01, 0.0], [0.01, 0.02, 0.005], [0.0, 0.005, 0.01]])
    pixels = RNG.multivariate_normal([0.5, 0.4, 0.3], cov, size=4000)
    images = pixels.reshape(40, 10, 10, 3)
    stats = compute_pca_stats(images)
    vals, vecs = np.linalg.eigh(np.cov(pixels.T, bias=True))
    np.testing.assert_allclose(stats["pca_eigenvalues"], vals[::-1], rtol=1e-6)
    np.testing.assert_allclose(np.abs(stats["pca_eigenvectors"]), np.abs(vecs[:, ::-1]), atol=1e-6)
    ds = tf.data.Dataset.from_tensor_slices((images.astype("float32"), np.zeros(40)))
    streamed = compute_pca_stats(ds)
    np.testing.assert_allclose(streamed["pca_eigenvalues"], vals[::-1], rtol=1e-4)


def test_pca_color_noise_lies_along_eigenvectors_with_the_formula():
    vecs = np.linalg.qr(RNG.randn(3, 3))[0]
    vals = np.array([0.04, 0.01, 0.0])  # no variance along the third component
    stats = {"pca_eigenvalues": vals.tolist(), "pca_eigenvectors": vecs.tolist()}
    n = 2000
    images = np.full((n, 4, 4, 3), 0.5, "float32")
    labels = np.eye(4, dtype="float32")[np.zeros(n, int)]
    fn = build_augment([{"name": "pca_color", "std": 0.1}], seed=1, num_classes=4, stats=stats)
    x, _ = run(fn, images, labels, batch=500)
    delta = (x - images).reshape(n, -1, 3)
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1], delta.shape), atol=1e-6)
    coeff = delta[:, 0] @ vecs  # delta = V (alpha * lambda)  =>  V^T delta = alpha * lambda
    np.testing.assert_allclose(coeff[:, 2], 0.0, atol=1e-6)
    alpha = coeff[:, :2] / vals[:2]
    assert np.abs(alpha.mean(axis=0)).max() < 0.01
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.08)


def test_pca_color_without_stats_is_a_clear_error():
    with pytest.raises(UserError, match=r"data.augment\[1\] \(pca_color\): needs training-set"):
        build_augment([{"name": "flip"}, {"name": "pca_color"}], seed=0, num_classes=4)


def test_random_crop_is_a_per_image_shift_of_the_padded_image():
    fn = build_augment([{"name": "random_crop", "padding": 2}], seed=2, num_classes=4)
    x, _ = run(fn, IMAGES, LABELS, batch=8)
    padded = np.pad(IMAGES, [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = []
    for i in range(8):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(padded[i, dy : dy + 12, dx : dx + 12], x[i])
        ]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 1, "every image got the same crop"


def test_random_erasing_rectangle_follows_area_and_ratio():
    spec = {
        "name": "random_erasing",
        "p": 1.0,
        "fill": 2.0,
        "area": [0.1, 0.3],
        "ratio": [0.5, 2.0],
    }
    fn = build_augment([spec], seed=4, num_classes=4)
    images = np.zeros((8, 40, 40, 3), "float32")
    x, _ = run(fn, images, LABELS, batch=8)
    for img in x[..., 0]:
        rows, cols = np.where(img == 2.0)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w  # one filled rectangle
        assert 0.1 * 1600 - 2 * 40 <= h * w <= 0.3 * 1600 + 2 * 40
        assert 0.5 * 0.8 <= h / w <= 2.0 * 1.25


def test_salt_and_pepper_amount_and_p():
    images = np.full((8, 32, 32, 3), 0.5, "float32")
    fn = build_augment([{"name": "salt_and_pepper", "amount": 0.1}], seed=0, num_classes=4)
    x, _ = run(fn, images, LABELS, batch=8)
    changed = x[..., 0] != 0.5
    assert changed.mean() == pytest.approx(0.1, abs=0.02)
    assert set(np.unique(x[changed])) == {0.0, 1.0}
    assert (x == x[..., :1]).all()  # whole pixels, all channels
    half = build_augment([{"name": "gaussian_noise", "p": 0.5}], seed=0, num_classes=4)
    y, _ = run(
        half, np.full((64, 4, 4, 3), 0.5, "float32"), np.eye(4, dtype="float32")[[0] * 64], 64
    )
    untouched = (y == 0.5).all(axis=(1, 2, 3)).mean()
    assert 0.25 < untouched < 0.75


def test_autoaugment_policies_are_the_published_tables():
    assert len(P.IMAGENET_POLICY) == 25 and len(P.CIFAR10_POLICY) == 25
    assert P.IMAGENET_POLICY[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert P.IMAGENET_POLICY[-1] == (("Equalize", 0.8, None), ("Equalize", 0.6, None))
    assert P.CIFAR10_POLICY[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert P.CIFAR10_POLICY[-1] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None))
    for policy in (P.IMAGENET_POLICY, P.CIFAR10_POLICY):
        for sub in policy:
            assert len(sub) == 2
            for op, prob, level in sub:
                assert op in P.OPS and 0.0 <= prob <= 1.0
                assert (level is None) == (op in ("AutoContrast", "Equalize", "Invert"))
    assert len(P.RANDAUGMENT_OPS) == 14


def test_policy_primitives_match_pil():
    img = (RNG.beta(2, 5, size=(2, 12, 10, 3)) * 255).astype(np.uint8)
    x = tf.constant(img.astype("float32") / 255.0)

    def pil(fn):
        return np.stack([np.asarray(fn(Image.fromarray(a))) for a in img]).astype("float32") / 255

    def close(ours, ref, levels):
        assert np.abs(np.asarray(ours) - ref).max() * 255 <= levels

    close(P.equalize(x), pil(ImageOps.equalize), 0)
    close(P.posterize(x, tf.constant([3, 3])), pil(lambda a: ImageOps.posterize(a, 3)), 0)
    close(
        P.solarize(x, tf.constant([100 / 255] * 2)), pil(lambda a: ImageOps.solarize(a, 100)), 0.01
    )
    close(P.autocontrast(x), pil(ImageOps.autocontrast), 1.01)  # PIL rounds to uint8
    f = tf.constant([1.6, 0.4])
    for ours, enhancer in [
        (P.color, ImageEnhance.Color),
        (P.contrast, ImageEnhance.Contrast),
        (P.brightness, ImageEnhance.Brightness),
        (P.sharpness, ImageEnhance.Sharpness),
    ]:
        ref = np.stack(
            [
                np.asarray(enhancer(Image.fromarray(a)).enhance(v))
                for a, v in zip(img, [1.6, 0.4], strict=True)
            ]
        )
        close(ours(x, f), ref.astype("float32") / 255, 1.2)
    for op, value, pil_fn in [
        ("ShearX", 0.3, lambda a: a.transform(a.size, Image.AFFINE, (1, 0.3, 0, 0, 1, 0))),
        ("TranslateY", 3.0, lambda a: a.transform(a.size, Image.AFFINE, (1, 0, 0, 0, 1, 3))),
        ("Rotate", 90.0, lambda a: a.rotate(90)),
    ]:
        sq = x[:, :10, :10]
        idx = tf.fill((2,), P.OPS.index(op))
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=sq,
            transforms=P.affine_matrices(idx, tf.fill((2,), value), 10, 10),
            output_shape=[10, 10],
            fill_value=0.0,
            interpolation="NEAREST",
            fill_mode="CONSTANT",
        )
        ref = np.stack([np.asarray(pil_fn(Image.fromarray(a[:10, :10]))) for a in img])
        close(out, ref.astype("float32") / 255, 0.01)


def test_autoaugment_draws_subpolicies_per_image():
    images = tf.constant(np.repeat(IMAGES[:1], 16, axis=0))
    x = P.autoaugment(images, tf.random.Generator.from_seed(9), "cifar10").numpy()  # eager
    distinct = {x[i].round(4).tobytes() for i in range(16)}
    assert len(distinct) > 4


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [{"name": "flip"}, {"name": "flip"}, {"name": "cutout", "sise": 3}],
            "data.augment[2] (cutout): Unknown key 'sise'. Expected one of: p, size, num_holes",
        ),
        (
            [{"name": "flipp"}],
            "data.augment[0]: unknown augmentation 'flipp'. Did you mean 'flip'?",
        ),
        (
            [{"name": "rotation", "degrees": -5}],
            "data.augment[0] (rotation): degrees: Input should",
        ),
        ([{"name": "mixup", "alpha": "big"}], "Received: 'big'"),
        ([{"name": "random_erasing", "area": [0.5, 0.1]}], "(random_erasing): area must be"),
        ([{"name": "autoaugment", "policy": "svhnn"}], "'imagenet' or 'cifar10'"),
        ([{"name": "randaugment", "magnitude": 31}], "magnitude: Input should be less than"),
        (
            [{"name": "randaugment", "magnitude_sampling": "random"}],
            "magnitude_sampling: Input should be 'fixed' or 'uniform'",
        ),
        (
            [{"name": "random_resized_crop", "ratio": [2.0, 0.5]}],
            "(random_resized_crop): ratio must be [min, max] with 0.0 < min <= max",
        ),
        ([{"name": "gaussian_blur", "kernel": 0}], "(gaussian_blur): kernel: Input should be"),
        ([{"name": "cutout", "size": 1.5}], "(cutout): size must be in (0, 1] or a range"),
        ([{"rotation": 5}], "data.augment[0]: expected a mapping with a 'name' key"),
        ({"name": "flip"}, "data.augment: expected a list"),
    ],
)
def test_validation_errors_name_the_entry_key_and_expectation(specs, message):
    with pytest.raises(UserError) as err:
        validate_augment(specs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_label_width_and_batching_are_checked():
    fn = build_augment([{"name": "flip"}], seed=0, num_classes=5)
    with pytest.raises(ValueError, match="one-hot labels"):
        run(fn, IMAGES, LABELS)
    unbatched = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS))
    with pytest.raises(ValueError, match="batch the dataset before mapping it"):
        unbatched.map(build_augment([{"name": "flip"}], seed=0, num_classes=4))


def test_augment_preview_command_writes_a_grid(tmp_path, capsys):
    from kerasdl.cli import main

    out = tmp_path / "grid.png"
    augment = "data.augment=[{name: random_crop, padding: 2}, {name: pca_color}, {name: cutmix}]"
    args = ["augment-preview", "configs/quickstart.yaml", "--out", str(out), "--n", "6"]
    assert main([*args, "--set", augment, "--originals"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    assert "Saved 6 augmented training images (random_crop, pca_color, cutmix)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "the recipe has no data.augment list"),
        (["--set", "data.augment=[{name: cutout, sise: 3}]"], "(cutout): Unknown key 'sise'"),
    ],
)
def test_augment_preview_errors_are_one_line(tmp_path, capsys, extra, message):
    from kerasdl.cli import main

    out = tmp_path / "grid.png"
    assert main(["augment-preview", "configs/quickstart.yaml", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_apply_ops_gives_each_image_its_own_operation():
    x = tf.constant(RNG.rand(16, 8, 8, 3).astype("float32"))
    op_index = tf.constant(np.arange(16) % 15, tf.int32)
    level = tf.fill((16,), 5.0)
    out = P.apply_ops(x, op_index, level, tf.ones(16), 0.3, set(P.OPS)).numpy()
    half = tf.constant([0.5])
    enhance = tf.constant([1.0])  # 0.1 + 1.8 * 5 / 10
    expected = {
        "Identity": lambda a: a,
        "AutoContrast": P.autocontrast,
        "Equalize": P.equalize,
        "Invert": P.invert,
        "Solarize": lambda a: P.solarize(a, half),
        "Posterize": lambda a: P.posterize(a, tf.constant([6])),
        "Color": lambda a: P.color(a, enhance),
        "Sharpness": lambda a: P.sharpness(a, enhance),
    }
    for i in range(16):
        name = P.OPS[i % 15]
        if name in expected:
            np.testing.assert_allclose(out[i], expected[name](x[i : i + 1])[0], atol=1e-6)
        elif name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
            assert not np.allclose(out[i], x[i])


def test_normalized_specs_are_plain_yaml():
    import yaml

    specs = validate_augment([{"name": "random_erasing", "area": [0.1, 0.2]}])
    assert yaml.safe_load(yaml.safe_dump(specs)) == specs
    assert specs[0]["area"] == [0.1, 0.2] and specs[0]["ratio"] == [0.3, pytest.approx(1 / 0.3)]
