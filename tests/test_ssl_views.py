"""The views of the semi- and self-supervised methods: augment-spec lists of the one system."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasdl.data import augment_policies as P
from kerasdl.data import ssl
from kerasdl.data.augment import build_augment, gaussian_blur, random_resized_crop
from kerasdl.data.augment_specs import (
    VIEWS,
    color_jitter_strength,
    validate_augment,
    validate_view,
    view_specs,
)
from kerasdl.errors import UserError
from kerasdl.methods.params import PARAMS

RNG = np.random.default_rng(0)
IMAGES = RNG.random((8, 16, 16, 3)).astype("float32")


def graph(fn, images):
    """``fn`` mapped over one batch inside tf.data (graph mode, as in training)."""
    ds = tf.data.Dataset.from_tensors(tf.constant(images)).map(fn)
    return next(iter(ds)).numpy()


def ramp(n=4, size=16, channels=1):
    """Images whose value is the column index / (size - 1): a crop-and-resize keeps every row an
    affine function of the column, a colour change would not."""
    row = np.linspace(0.0, 1.0, size, dtype="float32")
    return np.broadcast_to(row[None, None, :, None], (n, size, size, channels)).copy()


# ----------------------------------------------------------------------------- the specs


def test_views_are_the_papers_and_match_the_methods_recipe_defaults():
    assert set(VIEWS) == {"fixmatch_weak", "fixmatch_strong", "simclr", "mae"}
    for name in VIEWS:
        assert view_specs(name) == validate_augment(VIEWS[name])
    names = {k: [s["name"] for s in view_specs(k)] for k in VIEWS}
    assert names["fixmatch_weak"] == ["flip", "translation"]
    assert names["fixmatch_strong"] == ["flip", "translation", "randaugment", "cutout"]
    assert names["simclr"] == [
        "random_resized_crop",
        "flip",
        "color_jitter",
        "grayscale",
        "gaussian_blur",
    ]
    assert names["mae"] == ["random_resized_crop", "flip"]
    strong = {s["name"]: s for s in view_specs("fixmatch_strong")}
    assert strong["translation"]["height"] == strong["translation"]["width"] == 0.125
    assert strong["translation"]["fill_mode"] == "reflect"
    assert strong["randaugment"]["num_ops"] == 2
    assert strong["randaugment"]["magnitude_sampling"] == "uniform"
    assert strong["cutout"]["size"] == [0.0, 0.5] and strong["cutout"]["fill"] == 0.5
    simclr = {s["name"]: s for s in view_specs("simclr")}
    assert simclr["random_resized_crop"]["scale"] == [0.08, 1.0]
    assert simclr["random_resized_crop"]["ratio"] == pytest.approx([3 / 4, 4 / 3])
    assert simclr["color_jitter"]["p"] == 0.8 and simclr["grayscale"]["p"] == 0.2
    assert simclr["gaussian_blur"] == {
        "name": "gaussian_blur",
        "p": 0.5,
        "kernel": 0.1,
        "sigma": [0.1, 2.0],
    }
    # the defaults of the methods' recipe keys give the views unchanged
    for method, view in (("simclr", "simclr"), ("moco", "simclr"), ("mae", "mae")):
        keys = PARAMS[method]().data_kwargs()
        assert view_specs(view, **keys) == view_specs(view), method
    for method in ("fixmatch", "pi_model", "mean_teacher", "pseudo_label"):
        flip = PARAMS[method]().data_kwargs()["flip"]
        assert view_specs("fixmatch_weak", flip=flip) == view_specs("fixmatch_weak")


def test_recipe_keys_edit_the_named_views():
    assert [s["name"] for s in view_specs("fixmatch_strong", flip=False)] == [
        "translation",
        "randaugment",
        "cutout",
    ]
    edited = {
        s["name"]: s
        for s in view_specs(
            "simclr",
            crop_scale=(0.3, 1.0),
            jitter_strength=1.0,
            jitter_prob=0.5,
            grayscale_prob=0.0,
            blur_prob=0.1,
        )
    }
    assert edited["random_resized_crop"]["scale"] == [0.3, 1.0]
    jitter = edited["color_jitter"]
    assert (jitter["brightness"], jitter["contrast"], jitter["saturation"]) == (0.8, 0.8, 0.8)
    assert jitter["hue"] == pytest.approx(0.2) and jitter["p"] == 0.5
    assert edited["grayscale"]["p"] == 0.0 and edited["gaussian_blur"]["p"] == 0.1
    assert "color_jitter" not in [s["name"] for s in view_specs("simclr", jitter_strength=0)]
    assert color_jitter_strength(0.5) == {
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.4,
        "hue": 0.1,
    }
    own = [{"name": "random_resized_crop", "scale": [0.5, 1.0]}]
    assert view_specs(own, crop_scale=(0.1, 1.0), flip=False)[0]["scale"] == [0.5, 1.0]


@pytest.mark.parametrize(
    ("call", "parts"),
    [
        (lambda: view_specs("simclrr"), ["view: unknown view 'simclrr'. Did you mean 'simclr'?"]),
        (lambda: view_specs("simclr", jitter_strength=2.0), ["jitter_strength must be in"]),
        (
            lambda: validate_view([{"name": "flip"}, {"name": "mixup"}]),
            ["view[1] (mixup): mixes labels; a view transforms one image alone.", "Expected"],
        ),
        (lambda: validate_view(["pca_color"]), ["view[0] (pca_color): needs training-set"]),
        # the messages of the spec models (the entry, then the key and what was expected)
        (
            lambda: view_specs([{"name": "gaussian_blur", "sigma": [2.0, 0.5]}], key="m.view"),
            ["m.view[0] (gaussian_blur)", "sigma must be [min, max] with 0.0 < min <= max"],
        ),
        (
            lambda: view_specs([{"name": "random_resized_crop", "scale": [0.0, 1.0]}]),
            ["view[0] (random_resized_crop)", "scale must be [min, max] with 0.0 < min"],
        ),
        (
            lambda: view_specs([{"name": "cutout", "size": [0.6, 0.2]}]),
            ["view[0] (cutout)", "size must be [min, max] with 0.0 <= min <= max <= 1.0"],
        ),
        (lambda: view_specs([{"name": "grayscale", "mode": 1}]), ["view[0] (grayscale)", "mode"]),
    ],
)
def test_view_errors_are_one_line(call, parts):
    with pytest.raises(UserError) as err:
        call()
    for part in parts:
        assert part in str(err.value)
    assert "\n" not in str(err.value)


def test_view_specs_are_checked_before_tensorflow_loads():
    code = (
        "import sys\n"
        "from kerasdl.data.augment_specs import view_specs\n"
        "view_specs('simclr', jitter_strength=1.0); view_specs([{'name': 'gaussian_blur'}])\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- the views


def test_weak_view_of_a_constant_image_stays_constant():
    const = np.full((6, 16, 16, 3), 0.3, "float32")
    for flip in (True, False):
        out = graph(ssl.build_view("fixmatch_weak", seed=1, flip=flip), const)
        assert out.shape == const.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_weak_view_moves_pixels_and_flip_false_never_mirrors():
    x = ramp(16, channels=1)
    out = graph(ssl.build_view("fixmatch_weak", seed=0), x)
    assert not np.allclose(out, x)
    # horizontal flips reverse the ramp (the row means decrease); without flips none does
    mirrored = lambda o: o[:, :, -4:].mean(axis=(1, 2, 3)) < o[:, :, :4].mean(axis=(1, 2, 3))  # noqa: E731
    assert mirrored(out).any()
    assert not mirrored(graph(ssl.build_view("fixmatch_weak", seed=0, flip=False), x)).any()


def test_strong_view_changes_pixels_and_stays_in_range():
    fn = ssl.build_view("fixmatch_strong", seed=0, flip=False)
    for channels in (1, 3):
        x = IMAGES[..., :channels]
        out = graph(fn, x)
        assert out.shape == x.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert np.abs(out - x).max(axis=(1, 2, 3)).min() > 1e-3  # every image changed
    one = fn(tf.constant(IMAGES[0]))  # one image, eager
    assert one.shape == (16, 16, 3)


def test_simclr_views_differ_and_stay_in_range():
    images = np.repeat(IMAGES[:1], 8, axis=0)
    ds = ssl.contrastive_dataset(tf.data.Dataset.from_tensor_slices(images), 8, seed=0)
    v1, v2 = (v.numpy() for v in next(iter(ds)))
    assert v1.shape == v2.shape == (8, 16, 16, 3) and v1.dtype == np.float32
    assert 0.0 <= min(v1.min(), v2.min()) and max(v1.max(), v2.max()) <= 1.0
    assert all(not np.allclose(v1[i], v2[i]) for i in range(8)), "two views of an image agree"
    assert not np.allclose(v1[0], v1[1]), "two images of a batch got the same view"


def test_mae_view_has_no_colour_change():
    # a crop-and-resize of a horizontal ramp: every row affine in the column, rows equal
    out = graph(ssl.build_view("mae", seed=0, flip=False), ramp(8))
    steps = np.diff(out[..., 0], axis=2)
    np.testing.assert_allclose(steps - steps[:, :, :1], 0.0, atol=1e-5)
    np.testing.assert_allclose(out - out[:, :1], 0.0, atol=1e-6)
    assert (steps > 0).all() and (steps <= 1 / 15 + 1e-6).all()  # zoomed in, not mirrored
    colour = np.broadcast_to(np.array([0.2, 0.5, 0.9], "float32"), (4, 16, 16, 3))
    np.testing.assert_allclose(graph(ssl.build_view("mae", seed=0), colour), colour, atol=1e-6)


def test_views_are_deterministic_given_the_seed():
    def first(seed):
        ds = ssl.contrastive_dataset(tf.data.Dataset.from_tensor_slices(IMAGES), 4, seed=seed)
        return [v.numpy() for v in next(iter(ds))]

    a, b, c = first(3), first(3), first(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


# ----------------------------------------------------------------------------- the new ops


def test_grayscale_with_p_1_has_equal_channels_and_keeps_one_channel_images():
    fn = build_augment([{"name": "grayscale", "p": 1.0}], seed=0, num_classes=1)
    labels = np.zeros((8, 1), "float32")
    out = graph(lambda x: fn(x, labels)[0], IMAGES)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)
    lum = IMAGES @ np.array([0.2989, 0.587, 0.114], "float32")
    np.testing.assert_allclose(out[..., 0], lum, atol=1e-3)
    one = graph(lambda x: fn(x, labels)[0], IMAGES[..., :1])
    np.testing.assert_array_equal(one, IMAGES[..., :1])


def test_gaussian_blur_matches_a_numpy_reference_and_smooths():
    from scipy.ndimage import correlate1d

    sigma = 1.3
    gen = tf.random.Generator.from_seed(0)
    out = gaussian_blur(tf.constant(IMAGES), gen, kernel=0.3, sigma=(sigma, sigma)).numpy()
    r = int(0.3 * 16) // 2
    taps = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    ref = correlate1d(correlate1d(IMAGES, taps, axis=1, mode="mirror"), taps, axis=2, mode="mirror")
    np.testing.assert_allclose(out, ref, atol=1e-5)

    def variation(x):
        return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()

    assert variation(out) < 0.5 * variation(IMAGES)
    const = np.full((2, 16, 16, 1), 0.7, "float32")
    same = gaussian_blur(tf.constant(const), gen, kernel=0.1, sigma=(0.1, 2.0)).numpy()
    np.testing.assert_allclose(same, 0.7, atol=1e-6)


def test_gaussian_blur_draws_sigma_per_image():
    images = np.repeat(IMAGES[:1], 6, axis=0)
    out = gaussian_blur(tf.constant(images), tf.random.Generator.from_seed(1), 0.3, (0.1, 2.0))
    assert len({np.round(o, 5).tobytes() for o in out.numpy()}) == 6


def test_random_resized_crop_size_scale_and_identity():
    gen = tf.random.Generator.from_seed(0)
    x = tf.constant(ramp(64, size=16))
    out = random_resized_crop(x, gen, (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
    assert out.shape == (64, 16, 16, 1)
    width = np.diff(out[:, 0, :, 0], axis=1).mean(axis=1) * 15  # (crop width - 1) / 15
    assert width.max() <= 1 + 1e-5 and width.min() < 0.5  # some crops keep < half the width
    assert len(np.unique(np.round(width, 4))) > 5  # per-image crops
    small = random_resized_crop(x, gen, (0.2, 0.2), (1.0, 1.0)).numpy()
    width = np.diff(small[:, 0, :, 0], axis=1).mean(axis=1) * 15
    np.testing.assert_allclose(width, (round(np.sqrt(0.2) * 16) - 1) / 15, atol=1e-5)
    whole = random_resized_crop(tf.constant(IMAGES), gen, (1.0, 1.0), (3 / 4, 4 / 3))
    np.testing.assert_allclose(whole.numpy(), IMAGES, atol=1e-6)
    wide = tf.constant(RNG.random((2, 8, 20, 3)).astype("float32"))
    assert random_resized_crop(wide, gen, (0.5, 1.0), (0.5, 2.0)).shape == (2, 8, 20, 3)


def test_cutout_with_a_size_range_is_a_grey_square_up_to_half_the_side():
    fn = build_augment([{"name": "cutout", "size": [0.0, 0.5], "fill": 0.5}], seed=0, num_classes=1)
    ones = np.ones((64, 16, 16, 1), "float32")
    out = graph(lambda x: fn(x, np.zeros((64, 1), "float32"))[0], ones)[..., 0]
    sides = []
    for img in out:
        grey = img == 0.5
        rows, cols = grey.any(axis=1), grey.any(axis=0)
        assert grey.sum() == rows.sum() * cols.sum()  # one rectangle
        assert rows.sum() <= 8 and cols.sum() <= 8
        sides.append(max(rows.sum(), cols.sum()))
    assert len(set(sides)) > 4  # drawn per image
    assert set(np.unique(out)) <= {0.5, 1.0}


def test_cutout_fixed_size_is_ceil_of_the_fraction():
    from kerasdl.data.augment import cutout

    out = cutout(tf.ones((32, 16, 16, 1)), tf.random.Generator.from_seed(0), 0.25).numpy()
    holes = [int((img == 0).sum()) for img in out]
    assert max(holes) == 16 and min(holes) >= 4  # 4 x 4, clipped at the borders


def test_randaugment_uniform_magnitude_draws_a_level_per_image_and_op(monkeypatch):
    levels = []

    def spy(x, op, level, *args):
        levels.append(level.numpy())
        return x

    monkeypatch.setattr(P, "apply_ops", spy)
    x = tf.constant(IMAGES)
    P.randaugment(x, tf.random.Generator.from_seed(0), 2, 10.0, random_magnitude=True)
    assert len(levels) == 2 and not np.allclose(levels[0], levels[1])
    got = np.concatenate(levels)
    assert got.min() >= 0.0 and got.max() <= 10.0 and len(np.unique(got)) == 16
    levels.clear()
    P.randaugment(x, tf.random.Generator.from_seed(0), 2, 9.0)
    np.testing.assert_array_equal(np.concatenate(levels), 9.0)


# ----------------------------------------------------------------------------- the datasets


def test_semi_supervised_dataset_shapes_views_and_seed():
    x = RNG.random((48, 8, 8, 1)).astype("float32")
    y = np.repeat(np.arange(4), 12)

    def first(seed, views="weak_strong"):
        lab, unl = ssl.split_labelled((x, y), 2, seed=0)
        return ssl.semi_supervised_dataset(lab, unl, 4, 4, mu=2, views=views, seed=seed, flip=False)

    (a_l, _), (a_w, a_s) = next(iter(first(0)))
    (b_l, _), (b_w, b_s) = next(iter(first(0)))
    np.testing.assert_array_equal(a_w, b_w)
    np.testing.assert_array_equal(a_s, b_s)
    np.testing.assert_array_equal(a_l, b_l)
    ds = first(0)
    (xl, yl), (w, s) = ds.element_spec
    assert xl.shape == (4, 8, 8, 1) and yl.shape == (4, 4)
    assert w.shape == s.shape == (8, 8, 8, 1)
    assert sum(1 for _ in ds) == 48 // 8
    assert not np.allclose(a_w, a_s)
    _, (c_w, c_s) = next(iter(first(1)))
    assert not np.allclose(a_w, c_w)
    _, (u1, u2) = next(iter(first(0, "two_weak")))
    assert all(not np.allclose(u1[i], u2[i]) for i in range(8))  # two weak views differ
    assert len(next(iter(first(0, "weak")))[1]) == 1


def test_semi_supervised_dataset_takes_own_views():
    x = RNG.random((16, 8, 8, 1)).astype("float32")
    lab, unl = ssl.split_labelled((x, np.arange(16) % 2), 2, seed=0)
    ds = ssl.semi_supervised_dataset(
        lab, unl, 2, 2, mu=2, weak=[], strong=[{"name": "cutout", "size": 0.5, "fill": 0.5}]
    )
    (xl, _), (w, s) = next(iter(ds))
    for img in xl.numpy():  # the empty view: labelled images as they are
        assert any(np.array_equal(img, x[j]) for j in range(16))
    assert ((s.numpy() == 0.5).sum(axis=(1, 2, 3)) >= 4).all() and not (w.numpy() == 0.5).any()


def test_masked_image_dataset_validation_view_is_plain():
    images = tf.data.Dataset.from_tensor_slices(IMAGES)
    plain = next(iter(ssl.masked_image_dataset(images, 8, view=[], shuffle=False)))
    np.testing.assert_array_equal(plain.numpy(), IMAGES)
    std = next(iter(ssl.masked_image_dataset(images, 8, mean=[0.5] * 3, std=[0.25] * 3)))
    assert std.shape == (8, 16, 16, 3) and std.numpy().min() < 0.0  # standardized after


def test_mae_method_validation_batches_are_the_plain_images():
    from kerasdl.methods import method_datasets

    splits = {
        "train": tf.data.Dataset.from_tensor_slices((IMAGES, np.zeros(8, "int64"))),
        "val": tf.data.Dataset.from_tensor_slices((IMAGES[::-1], np.zeros(8, "int64"))),
    }
    _, val = method_datasets({"name": "mae", "flip": True}, splits, 4, 2, seed=0)
    for img in np.concatenate([b.numpy() for b in val]):
        assert any(np.array_equal(img, ref) for ref in IMAGES)
