"""timm's RandAugment (``rand_augment_timm``) against timm itself: the config strings, every
operation's argument at every magnitude, the operations on images, and the draws."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasdl.data import augment_timm
from kerasdl.data.augment import build_augment, validate_augment
from kerasdl.data.augment_policies import OPS, apply_values
from kerasdl.data.augment_timm import TRANSFORMS, level_values, timm_randaugment
from kerasdl.data.timm_config import parse_config
from kerasdl.errors import UserError

RNG = np.random.default_rng(0)
UINT8 = (RNG.beta(2, 5, size=(3, 24, 20, 3)) * 255).astype(np.uint8)
INCREASING = {
    "Posterize": "PosterizeIncreasing",
    "Solarize": "SolarizeIncreasing",
    "Color": "ColorIncreasing",
    "Contrast": "ContrastIncreasing",
    "Brightness": "BrightnessIncreasing",
    "Sharpness": "SharpnessIncreasing",
}
REL = {"TranslateX": "TranslateXRel", "TranslateY": "TranslateYRel"}


def _aa():
    pytest.importorskip("torch")
    from kerasdl.interop import import_timm

    import_timm()
    from timm.data import auto_augment

    return auto_augment


def timm_name(ours: str, increasing: bool) -> str:
    return REL.get(ours) or (INCREASING.get(ours, ours) if increasing else ours)


@pytest.mark.parametrize(
    "text", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.3", "rand-m9-mstd101", "rand-mmax12-m11"]
)
def test_config_strings_read_as_timm_reads_them(text):
    aa = _aa()
    ref = aa.rand_augment_transform(text, {})
    got = parse_config(text)
    op = ref.ops[0]
    assert got.num_ops == ref.num_layers and got.magnitude == op.magnitude
    assert got.prob == op.prob
    assert got.magnitude_std == op.hparams.get("magnitude_std", 0)
    assert got.magnitude_max == (op.hparams.get("magnitude_max") or aa._LEVEL_DENOM)
    names = [timm_name(o, got.increasing) for o in TRANSFORMS]
    assert names == [o.name for o in ref.ops]


def test_bad_config_strings_are_one_clear_error():
    with pytest.raises(UserError, match="must start with 'rand'"):
        parse_config("augmix-m5")
    with pytest.raises(UserError, match="cannot read 'tweights'"):
        parse_config("rand-m9-tweights")
    with pytest.raises(UserError, match=r"data.augment\[0\] \(rand_augment_timm\)"):
        validate_augment([{"name": "rand_augment_timm", "config": "rand-q3"}])


@pytest.mark.parametrize("increasing", [True, False])
def test_every_argument_at_every_magnitude_is_timms(increasing, monkeypatch):
    aa = _aa()
    h, w = 24, 20
    rows, want = [], []
    for sign in (1.0, -1.0):
        monkeypatch.setattr(aa, "_randomly_negate", lambda v, s=sign: s * v)
        for name in TRANSFORMS:
            fn = aa.LEVEL_TO_ARG[timm_name(name, increasing)]
            for level in np.linspace(0.0, 10.0, 21):
                if fn is None:
                    continue
                (arg,) = fn(float(level), {"translate_pct": 0.45})
                if name in REL:
                    arg = arg * (w if name == "TranslateX" else h)  # timm: pct * the side
                elif name == "Solarize":
                    arg = arg / 255.0
                elif name == "SolarizeAdd":
                    arg = arg / 255.0
                rows.append((OPS.index(name), level, sign))
                want.append(arg)
    op, level, sign = (np.array(c) for c in zip(*rows, strict=True))
    got = level_values(
        tf.constant(op, tf.int32),
        tf.constant(level, tf.float32),
        tf.constant(sign, tf.float32),
        increasing,
        h,
        w,
    ).numpy()
    np.testing.assert_allclose(got, np.array(want, np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    [
        "Invert",
        "Posterize",
        "Solarize",
        "SolarizeAdd",
        "Color",
        "Contrast",
        "Brightness",
        "Equalize",
        "ShearX",
        "TranslateY",
        "Rotate",
    ],
)
def test_operations_on_images_match_timms(name, monkeypatch):
    aa = _aa()
    monkeypatch.setattr(aa, "_randomly_negate", lambda v: v)
    fill = (124, 116, 104)
    kwargs = {"fillcolor": fill, "resample": Image.Resampling.NEAREST}
    level = 7.0
    fn = aa.LEVEL_TO_ARG[timm_name(name, True)]
    args = fn(level, {"translate_pct": 0.45}) if fn else ()
    op = aa.NAME_TO_OP[timm_name(name, True)]
    ref = np.stack([np.asarray(op(Image.fromarray(a), *args, **kwargs)) for a in UINT8])
    n = len(UINT8)
    index = tf.fill((n,), OPS.index(name))
    value = level_values(index, tf.fill((n,), level), tf.ones((n,)), True, 24, 20)
    got = apply_values(
        tf.constant(UINT8 / 255.0, tf.float32),
        index,
        value,
        {name},
        tuple(v / 255.0 for v in fill),
        "NEAREST",
    ).numpy()
    # PIL rounds to 8 bits, and its grey image (Color, Contrast) too: up to 1.5 levels apart
    levels = 1.5 if name in ("Color", "Contrast", "Brightness") else 1.01
    assert np.abs(got - ref / 255.0).max() <= levels / 255.0, name


def test_draws_per_image_follow_the_config(monkeypatch):
    seen = []

    def capture(x, op, value, used, fill):
        seen.append(op.numpy())
        return x

    monkeypatch.setattr(augment_timm, "apply_values", capture)
    n = 15 * 400
    timm_randaugment(
        tf.zeros((n, 4, 4, 3)), tf.random.Generator.from_seed(0), parse_config("rand-m9-p0.5-n3")
    )
    assert len(seen) == 3  # n layers
    for op in seen:
        identity = np.mean(op == OPS.index("Identity"))
        assert 0.47 < identity < 0.53  # each layer applied with p 0.5
        counts = np.bincount(op[op != 0], minlength=len(OPS))[[OPS.index(t) for t in TRANSFORMS]]
        assert np.all(np.abs(counts / counts.sum() - 1 / 15) < 0.02)  # uniform over 15


def test_magnitude_noise_is_gaussian_and_clipped(monkeypatch):
    levels = []
    original = augment_timm.level_values

    def capture(op, level, *args, **kwargs):
        levels.append(level.numpy())
        return original(op, level, *args, **kwargs)

    monkeypatch.setattr(augment_timm, "level_values", capture)
    gen = tf.random.Generator.from_seed(1)
    x = tf.zeros((4000, 4, 4, 3))
    timm_randaugment(x, gen, parse_config("rand-m9-mstd0.5-n1"))
    timm_randaugment(x, gen, parse_config("rand-m9-mstd101-n1"))
    timm_randaugment(x, gen, parse_config("rand-m12-n1"))
    gauss, uniform, fixed = levels
    assert abs(gauss.mean() - 9.0) < 0.05 and abs(gauss.std() - 0.5) < 0.05 and gauss.max() <= 10
    assert uniform.min() >= 0 and uniform.max() <= 9 and abs(uniform.mean() - 4.5) < 0.2
    assert np.all(fixed == 10.0)  # clipped to mmax 10, as timm


def test_the_recipe_op_runs_in_a_tf_data_pipeline():
    specs = validate_augment(
        [{"name": "rand_augment_timm", "fill": [124 / 255, 116 / 255, 104 / 255]}]
    )
    fn = build_augment(specs, seed=0, num_classes=3)
    ds = tf.data.Dataset.from_tensors((tf.constant(UINT8 / 255.0, tf.float32), tf.eye(3)))
    x, y = next(iter(ds.map(fn)))
    assert x.shape == UINT8.shape and float(tf.reduce_min(x)) >= 0 and float(tf.reduce_max(x)) <= 1
    np.testing.assert_array_equal(y.numpy(), np.eye(3))


def test_a_per_channel_fill_must_match_the_channels():
    specs = validate_augment([{"name": "rand_augment_timm", "fill": [0.5, 0.5, 0.5]}])
    fn = build_augment(specs, seed=0, num_classes=3)
    with pytest.raises(UserError, match="fill: 3 values for images of 1 channels"):
        fn(tf.zeros((2, 8, 8, 1)), tf.eye(3)[:2])
