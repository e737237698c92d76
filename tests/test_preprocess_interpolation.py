"""``data.interpolation``: the resize filter of training and of the exported signature, as PIL's
(which torchvision and timm resize PIL images with)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kerasdl.data.preprocess import PreprocessSpec, preprocess_images


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[0]  # 427 x 640 x 3 uint8


@pytest.mark.parametrize(
    "method,pil", [("bilinear", Image.Resampling.BILINEAR), ("bicubic", Image.Resampling.BICUBIC)]
)
@pytest.mark.parametrize("size", [(224, 224), (96, 160)])
def test_resize_matches_pil(photo, method, pil, size):
    spec = PreprocessSpec(size, 3, interpolation=method)
    got = preprocess_images(photo, spec).numpy()
    want = np.asarray(Image.fromarray(photo).resize(size[::-1], pil), np.float32) / 255.0
    other = "bicubic" if method == "bilinear" else "bilinear"
    wrong = preprocess_images(photo, PreprocessSpec(size, 3, interpolation=other)).numpy()
    err, err_other = np.abs(got - want).mean(), np.abs(wrong - want).mean()
    assert err < 0.5 / 255.0, err  # measured 0.26-0.28 levels: PIL rounds to 8 bits
    assert err < 0.4 * err_other, (err, err_other)  # the other filter: 1.6-1.7 levels


def test_the_filter_is_recorded_and_old_specs_read_as_bilinear(tmp_path):
    spec = PreprocessSpec((32, 32), 3, [0.5] * 3, [0.25] * 3, ["a"], "bicubic")
    spec.save(tmp_path / "preprocess.json")
    assert PreprocessSpec.load(tmp_path / "preprocess.json") == spec
    assert spec.unit() == PreprocessSpec((32, 32), 3, [], [], ["a"], "bicubic")
    old = spec.to_json()
    del old["interpolation"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert PreprocessSpec.load(tmp_path / "old.json").interpolation == "bilinear"


def test_the_recipe_key_reaches_the_pipeline_spec():
    from kerasdl.config import RecipeConfig
    from kerasdl.data import load_data

    cfg = RecipeConfig.model_validate(
        {"data": {"source": "digits", "image_size": 12, "interpolation": "bicubic"}}
    )
    bundle = load_data(cfg.data, seed=0)
    assert bundle.spec.interpolation == "bicubic"
    x, _ = next(iter(bundle.splits["train"].batch(4)))
    assert x.shape[1:3] == (12, 12)
