"""The Classifier base: constructor arguments become attributes and the config, checked first."""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np
import pytest

import kerasdl.models
from kerasdl.errors import UnknownArgumentError
from kerasdl.models.base import Classifier, classifier_head
from kerasdl.registry import get_entry, list_models


@keras.saving.register_keras_serializable(package="kerasdl_test")
class Tiny(Classifier):
    def __init__(
        self,
        num_classes: int = 3,
        input_shape: tuple[int, int, int] | list[int] = (6, 6, 1),
        widths: tuple[int, ...] = (4, 2),
        scale: float = 1,
        **kwargs: Any,
    ) -> None:
        inputs = keras.Input(shape=tuple(input_shape))
        x = keras.layers.Flatten()(inputs)
        for w in widths:
            x = keras.layers.Dense(w)(x)
        super().__init__(inputs=inputs, outputs=classifier_head(x, num_classes), **kwargs)
        self.scale = float(scale)  # the constructor's own form of an argument wins


@keras.saving.register_keras_serializable(package="kerasdl_test")
class Tinier(Tiny):
    def __init__(self, depth: int = 1, **kwargs: Any) -> None:
        super().__init__(widths=[2] * depth, **kwargs)


def test_arguments_become_attributes_and_config() -> None:
    model = Tiny(widths=(5,), name="t")
    assert model.widths == [5] and model.num_classes == 3 and model.scale == 1.0
    assert model.input_shape_ == (6, 6, 1)  # keras.Model has input_shape: trailing underscore
    config = model.get_config()
    assert config == {
        "name": "t",
        "num_classes": 3,
        "input_shape": [6, 6, 1],
        "widths": [5],
        "scale": 1.0,
    }
    assert type(config["widths"]) is list and type(config["input_shape"]) is list
    again = Tiny.from_config(config)
    assert again.get_config() == config and again.count_params() == model.count_params()


def test_keras_file_round_trip(tmp_path) -> None:
    model = Tiny(widths=[3])
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is Tiny and loaded.get_config() == model.get_config()
    x = np.ones((2, 6, 6, 1), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_subclass_config_is_its_own_arguments() -> None:
    model = Tinier(depth=2, name="t2")
    assert model.get_config() == {"name": "t2", "depth": 2}
    assert model.widths == [2, 2] and model.num_classes == 3  # the parent's, as attributes
    assert Tinier.from_config(model.get_config()).count_params() == model.count_params()
    with pytest.raises(UnknownArgumentError, match="Tinier"):
        Tinier(num_classes=4)  # not an argument of Tinier: it would not be in its config


def test_unknown_keyword_is_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("built before the keywords were checked")

    monkeypatch.setattr(keras, "Input", boom)
    with pytest.raises(UnknownArgumentError, match=r"Tiny\(\): unknown keyword argument 'widht'"):
        Tiny(widht=3)


def test_random_init_spellings_are_dropped() -> None:
    assert "pretrained" not in Tiny(pretrained=False, weights=None).get_config()


def test_signature_is_the_constructor_s() -> None:
    params = list(inspect.signature(Tiny).parameters)
    assert params == ["num_classes", "input_shape", "widths", "scale", "kwargs"]
    spec = inspect.getfullargspec(Tiny.__init__)  # what keras's from_config reads
    assert spec.args == ["self", "num_classes", "input_shape", "widths", "scale"]
    assert spec.varargs is None


FAMILY_MODELS = list_models()


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_registry_models_are_classifiers_from_a_variant_table(name: str) -> None:
    builder = get_entry(name).builder
    assert issubclass(builder, Classifier) and "get_config" not in vars(builder)
    module = inspect.getmodule(builder)
    tables = [v for k, v in vars(module).items() if k.endswith("VARIANTS") and isinstance(v, dict)]
    assert any(table.get(name) == get_entry(name).defaults for table in tables)


def test_the_package_registers_every_family() -> None:
    modules = {get_entry(n).builder.__module__ for n in list_models()}
    assert {m.rsplit(".", 1)[1] for m in modules} <= set(vars(kerasdl.models))
