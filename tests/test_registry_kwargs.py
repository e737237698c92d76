"""Unknown model keywords are a clear error, before anything is built (issue 13, point 5).

Every registry model is checked by signature and with bad keywords only: ``keras.Input`` is
patched to fail, so a test passes only if the check runs before the model's graph is built.
"""

from __future__ import annotations

import keras
import pytest

import kerasdl
from kerasdl.errors import UnknownArgumentError, UserError
from kerasdl.registry import (
    KERAS_MODEL_KWARGS,
    check_model_kwargs,
    get_entry,
    list_models,
    model_arguments,
)

MODELS = list_models()


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the model started building before its keywords were checked")

    monkeypatch.setattr(keras, "Input", boom)


@pytest.mark.parametrize("name", MODELS)
def test_signature_lists_variant_defaults_and_keras_kwargs(name: str) -> None:
    entry = get_entry(name)
    accepted = model_arguments(entry.builder)
    assert set(entry.defaults) <= set(accepted)
    assert {"num_classes", "input_shape", *KERAS_MODEL_KWARGS} <= set(accepted)
    assert "pretrained" not in accepted and "weights" not in accepted


@pytest.mark.parametrize("name", MODELS)
def test_misspelt_keyword_is_named_with_a_suggestion(name: str, no_build) -> None:
    with pytest.raises(UnknownArgumentError) as info:
        kerasdl.create_model(name, num_clases=10)
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, UserError)
    msg = str(err)
    assert "\n" not in msg  # the CLI prints one line
    assert f"create_model({name!r}): unknown keyword argument 'num_clases'" in msg
    assert "Did you mean 'num_classes'?" in msg
    assert "Expected one of: num_classes, input_shape" in msg and "trainable" in msg


@pytest.mark.parametrize("name", MODELS)
def test_model_class_rejects_unknown_keyword_before_building(name: str, no_build) -> None:
    entry = get_entry(name)
    with pytest.raises(UnknownArgumentError, match=r"unknown keyword argument 'zzz'\. Expected"):
        entry.builder(**entry.defaults, zzz=1)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_true_is_refused_with_the_way_to_load_a_file(name: str, no_build) -> None:
    with pytest.raises(TypeError) as info:
        kerasdl.create_model(name, pretrained=True)
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert "kerasdl downloads no weights" in msg
    assert "create_model(name, weights=PATH)" in msg and "model.weights: PATH" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", MODELS)
def test_a_missing_weights_file_fails_before_building(name: str, no_build) -> None:
    with pytest.raises(UserError, match="weights: no such file: resnet18.pth"):
        kerasdl.create_model(name, weights="resnet18.pth")


def test_weights_path_loads(tmp_path) -> None:
    """Keras weights load into any registry model (checkpoint conversion: tests/test_weights*)."""
    import numpy as np

    kw = dict(num_classes=3, input_shape=[8, 8, 1], filters=[4])
    source = kerasdl.create_model("simple_cnn", **kw)
    source.save_weights(tmp_path / "w.weights.h5")
    model = kerasdl.create_model("simple_cnn", weights=str(tmp_path / "w.weights.h5"), **kw)
    assert model.weights_report.loaded == len(model.weights)
    for a, b in zip(source.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_keras_kwargs_and_random_init_spellings_still_build() -> None:
    model = kerasdl.create_model(
        "simple_cnn",
        num_classes=3,
        input_shape=[8, 8, 1],
        filters=[4],
        name="mine",
        trainable=False,
        dtype="float32",
        pretrained=False,
        weights=None,
    )
    assert model.name == "mine" and not model.trainable
    assert "pretrained" not in model.get_config() and "weights" not in model.get_config()


def test_check_model_kwargs_without_close_match_lists_all() -> None:
    def builder(alpha: int = 1, *, beta: int = 2) -> None: ...

    assert check_model_kwargs(builder, {"beta": 3}) == {"beta": 3}
    with pytest.raises(UnknownArgumentError) as info:
        check_model_kwargs(builder, {"qqqq": 1}, "f()")
    assert str(info.value) == "f(): unknown keyword argument 'qqqq'. Expected one of: alpha, beta."
