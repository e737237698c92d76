"""TrivialAugment Wide against torchvision's ``TrivialAugmentWide``; MixUp-or-CutMix per batch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasdl.data import augment_trivial
from kerasdl.data.augment import build_augment, validate_augment
from kerasdl.data.augment_policies import OPS, apply_values
from kerasdl.data.augment_trivial import WIDE_OPS, trivial_augment_wide, wide_values

RNG = np.random.default_rng(0)
UINT8 = RNG.integers(0, 256, size=(4, 20, 24, 3), dtype=np.uint8)


def _torchvision():
    pytest.importorskip("torch")
    from kerasdl.interop import import_torchvision

    return import_torchvision()


def _space(tv, num_bins: int) -> dict:
    return tv.transforms.TrivialAugmentWide()._augmentation_space(num_bins)


@pytest.mark.parametrize("num_bins", [31, 7])
def test_the_wide_space_is_torchvisions(num_bins):
    """Every operation's argument at every bin and sign, from torchvision's own table."""
    tv = _torchvision()
    space = _space(tv, num_bins)
    assert tuple(space) == WIDE_OPS
    for name, (magnitudes, signed) in space.items():
        if magnitudes.ndim == 0:
            continue
        for k, m in enumerate(magnitudes.tolist()):
            for sign in (1.0, -1.0) if signed else (1.0,):
                got = float(
                    wide_values(
                        tf.constant([OPS.index(name)]),
                        tf.constant([k]),
                        tf.constant([sign]),
                        num_bins,
                    )[0]
                )
                m = sign * m
                want = {  # how torchvision's _apply_op uses the magnitude
                    "TranslateX": float(int(m)),
                    "TranslateY": float(int(m)),
                    "Brightness": 1.0 + m,
                    "Color": 1.0 + m,
                    "Contrast": 1.0 + m,
                    "Sharpness": 1.0 + m,
                    "Solarize": m / 255.0,
                }.get(name, m)
                assert got == pytest.approx(want, abs=1e-6), (name, k, sign)


@pytest.mark.parametrize(
    "name",
    ["Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast"],
)
def test_photometric_operations_match_torchvision_on_uint8_images(name):
    import torch

    tv = _torchvision()
    from torchvision.transforms.autoaugment import _apply_op

    magnitudes, signed = _space(tv, 31)[name]
    picks = [0, 7, 19, 30] if magnitudes.ndim else [0]
    for k in picks:
        for sign in (1.0, -1.0) if signed else (1.0,):
            m = sign * float(magnitudes[k]) if magnitudes.ndim else 0.0
            ref = _apply_op(
                torch.from_numpy(UINT8).permute(0, 3, 1, 2),
                name,
                m,
                interpolation=tv.transforms.InterpolationMode.NEAREST,
                fill=None,
            )
            ref = ref.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
            n = len(UINT8)
            value = wide_values(
                tf.fill((n,), OPS.index(name)), tf.fill((n,), k), tf.fill((n,), sign), 31
            )
            got = apply_values(
                tf.constant(UINT8 / 255.0, tf.float32),
                tf.fill((n,), OPS.index(name)),
                value,
                {name},
            ).numpy()
            # torchvision truncates its results, and its grey image (Color, Contrast), to uint8
            # levels; kerasdl stays in float: at most one level from each truncation
            assert np.abs(got - ref).max() <= 2.01 / 255.0, (name, k, sign)
            assert np.abs(got - ref).mean() <= 1.0 / 255.0, (name, k, sign)


def test_translation_moves_whole_pixels_and_fills_black():
    x = tf.constant(UINT8[:1] / 255.0, tf.float32)
    op = tf.constant([OPS.index("TranslateX")])
    value = wide_values(op, tf.constant([30]), tf.constant([1.0]), 31)  # int(31.0 * 30 / 30)
    out = apply_values(x, op, value, {"TranslateX"}, fill=0.0, interpolation="NEAREST").numpy()
    shift = int(value[0])
    assert shift == 32
    assert np.all(out == 0.0)  # 32 px of a 24 px wide image: all fill
    value = wide_values(op, tf.constant([5]), tf.constant([-1.0]), 31)
    shift = int(value[0])
    out = apply_values(x, op, value, {"TranslateX"}, fill=0.0, interpolation="NEAREST").numpy()
    assert shift == -5
    # PIL's (AutoAugment's) direction, the mirror of torchvision's: the sign is drawn with p 1/2
    np.testing.assert_array_equal(out[0, :, 5:], x.numpy()[0, :, : 24 - 5])
    assert np.all(out[0, :, :5] == 0.0)


def test_each_image_draws_an_operation_a_bin_and_a_sign_uniformly(monkeypatch):
    seen = {}

    def capture(x, op, value, used, fill, interpolation):
        seen.update(op=op.numpy(), value=value.numpy(), used=used)
        return x

    monkeypatch.setattr(augment_trivial, "apply_values", capture)
    n = 14 * 400
    x = tf.zeros((n, 4, 4, 3))
    trivial_augment_wide(x, tf.random.Generator.from_seed(1))
    counts = np.bincount(seen["op"], minlength=len(OPS))
    wide = [OPS.index(o) for o in WIDE_OPS]
    assert set(np.flatnonzero(counts)) == set(wide) and seen["used"] == set(WIDE_OPS)
    assert np.all(np.abs(counts[wide] / n - 1 / 14) < 0.02)
    rotate = seen["value"][seen["op"] == OPS.index("Rotate")]
    assert 0.4 < np.mean(rotate > 0) < 0.6  # the sign
    bins = np.round(np.abs(rotate) / 135.0 * 30).astype(int)
    np.testing.assert_allclose(np.abs(rotate), bins * 135.0 / 30, atol=1e-3)
    assert len(set(bins)) == 31  # every bin occurs
    posterize = seen["value"][seen["op"] == OPS.index("Posterize")]
    assert set(posterize) <= set(range(2, 9)) and posterize.min() == 2 and posterize.max() == 8


def test_the_recipe_op_runs_in_graph_mode_and_replays_per_seed():
    specs = validate_augment([{"name": "trivial_augment_wide", "interpolation": "bilinear"}])
    assert specs[0] == {
        "name": "trivial_augment_wide",
        "p": 1.0,
        "num_magnitude_bins": 31,
        "interpolation": "bilinear",
        "fill": 0.0,
    }
    images = tf.constant(UINT8 / 255.0, tf.float32)
    labels = tf.one_hot([0, 1, 2, 3], 4)

    def run(seed: int) -> np.ndarray:
        ds = tf.data.Dataset.from_tensors((images, labels)).repeat(3)
        ds = ds.map(build_augment(specs, seed=seed, num_classes=4))
        return np.stack([x.numpy() for x, _ in ds])

    a, b = run(0), run(0)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.shape == (3, *images.shape)
    assert not np.array_equal(a[0], a[1])  # batches differ


def _mixed_batches(switch_prob: float, batches: int = 40) -> list[str]:
    """'cutmix' or 'mixup' for each batch of constant images (image i filled with value i/16)."""
    n = 16
    values = np.arange(n, dtype=np.float32) / n
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (n, 16, 16, 3)).copy())
    labels = tf.one_hot(np.arange(n), n)
    specs = [{"name": "mixup_or_cutmix", "switch_prob": switch_prob, "mixup_alpha": 1.0}]
    augment = build_augment(specs, seed=3, num_classes=n)
    kinds = []
    for _ in range(batches):
        x, y = (t.numpy() for t in augment(images, labels))
        own = np.isclose(x[..., 0][:, :, :, None], values[None, None, None, :], atol=1e-6)
        cut = bool(np.all(own.any(axis=-1)))  # every pixel is one of the original images
        if cut:  # CutMix's label: the fraction of pixels from each image
            for i in range(n):
                frac = np.mean(np.isclose(x[i, ..., 0], values[i], atol=1e-6))
                assert y[i, i] == pytest.approx(frac, abs=1e-5) or y[i].max() == 1.0
        else:  # MixUp's: the image is lam x_i + (1 - lam) x_j, a constant image
            assert np.allclose(x, x[:, :1, :1, :1], atol=1e-6)
        kinds.append("cutmix" if cut else "mixup")
    return kinds


def test_mixup_or_cutmix_picks_one_per_batch():
    assert set(_mixed_batches(1.0, 6)) == {"cutmix"}
    assert set(_mixed_batches(0.0, 6)) == {"mixup"}
    kinds = _mixed_batches(0.5)
    assert 8 <= kinds.count("cutmix") <= 32
