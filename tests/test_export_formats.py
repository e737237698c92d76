"""ONNX and LiteRT export: parity with the Keras model (onnxruntime, the LiteRT interpreter), the
run's preprocessing in the file, the version layout, atomic writes and one-line errors.

Needs the export tools (``tf2onnx``, ``onnx``, ``onnxruntime``; ``ai-edge-litert`` or TensorFlow's
own interpreter); the ONNX tests skip without them. The full per-family parity table is the
slow test at the end (``python -m kerasdl.export.portability formats`` prints it).
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest
from conftest_serving import CLASS_NAMES, digits_data, digits_run, fresh_dir, keras_model

from kerasdl.cli import main
from kerasdl.data.preprocess import PreprocessSpec, preprocess_images
from kerasdl.errors import UserError
from kerasdl.export import layout
from kerasdl.export.formats import (
    RTOL,
    export_portable,
    float32_model,
    load_exported,
    relative_error,
)

FILES = {"onnx": "model.onnx", "litert": "model.tflite"}


def _needs(fmt: str) -> None:
    if fmt == "onnx":
        for module in ("tf2onnx", "onnx", "onnxruntime"):
            pytest.importorskip(module)


def _spec() -> PreprocessSpec:
    return PreprocessSpec.load(digits_run() / "preprocess.json")


def _keras_logits(x01: np.ndarray) -> np.ndarray:
    """The training pipeline: [0, 1] pixels standardized by preprocess_images, then the model."""
    return keras.ops.convert_to_numpy(keras_model()(preprocess_images(x01, _spec())))


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_cli_export_runs_like_the_keras_model(fmt, capsys):
    """The exported file, given unstandardized [0, 1] digits, returns the Keras model's logits on
    standardized ones (the preprocessing travels in the file), its softmax, and ships the spec."""
    _needs(fmt)
    out = fresh_dir(f"cli-{fmt}")
    assert main(["export", str(digits_run()), "--format", fmt, "--out", str(out)]) == 0
    version = out / "digits" / "1"
    assert f"exported {version}" in capsys.readouterr().out
    assert sorted(p.name for p in version.iterdir()) == sorted(
        ["class_names.txt", "preprocess.json", FILES[fmt]]
    )
    assert (version / "class_names.txt").read_text().split() == CLASS_NAMES
    spec = json.loads((version / "preprocess.json").read_text())
    assert spec["mean"] == [0.3] and spec["std"] == [0.4] and spec["image_size"] == [8, 8]
    x, y = digits_data()
    batch = x[100:117]  # 17: the batch size is free
    got = load_exported(version / FILES[fmt])(batch)
    want = _keras_logits(batch)
    assert relative_error(got["logits"], want) <= RTOL
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-4)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(want))
    np.testing.assert_allclose(got["probabilities"], probs, atol=1e-5)
    assert (got["logits"].argmax(-1) == y[100:117]).mean() >= 0.7  # a real classifier
    # Without the standardization the logits would differ: the spec is in the file.
    raw = keras.ops.convert_to_numpy(keras_model()(batch))
    assert relative_error(got["logits"], raw) > 1e-2
    # A second export is the next version; .keras files work too.
    model_file = str(digits_run() / "best.keras")
    assert main(["export", model_file, "--format", fmt, "--out", str(out), "--version", "5"]) == 0
    assert layout.list_versions(out / "digits") == [1, 5]


def test_export_errors_are_one_line_and_leave_nothing(capsys):
    out = fresh_dir("errors")
    run = str(digits_run())
    assert main(["export", run, "--format", "onx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "kerasdl export: error: Unknown export format 'onx'. Did you mean 'onnx'? "
        "Expected one of: saved_model, onnx, litert."
    )
    assert not out.joinpath("digits").exists()
    (out / "digits" / "1").mkdir(parents=True)
    assert main(["export", run, "--format", "litert", "--out", str(out), "--version", "1"]) == 2
    assert "Version 1 already exists" in capsys.readouterr().err


def _igamma_model() -> keras.Model:
    """A classifier with a TensorFlow op neither tf2onnx nor the TFLite builtins convert."""
    import tensorflow as tf

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: tf.math.igamma(tf.abs(t) + 1.0, tf.abs(t) + 1.0))(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_unsupported_op_is_named_and_nothing_is_written(fmt):
    _needs(fmt)
    base = fresh_dir(f"unsupported-{fmt}")
    with pytest.raises(UserError, match="Igamma") as info:
        export_portable(_igamma_model(), _spec(), fmt, base, "digits")
    assert "\n" not in str(info.value)
    assert list((base / "digits").iterdir()) == []  # no version, no temporary folder


def test_missing_converter_and_failed_parity_leave_nothing(monkeypatch):
    _needs("onnx")
    base = fresh_dir("missing")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    with pytest.raises(UserError, match=r"ONNX export needs tf2onnx.*pip install"):
        export_portable(keras_model(), _spec(), "onnx", base, "digits")
    monkeypatch.undo()
    # A file whose outputs drift from the Keras model's is refused before it is renamed.
    from kerasdl.export import formats

    real = formats.load_exported

    def drifting(path):
        run = real(path)
        return lambda x: {k: v * (1 + 1e-3) for k, v in run(x).items()}

    monkeypatch.setattr(formats, "load_exported", drifting)
    with pytest.raises(UserError, match=r"relative error 1\.0\de-03 > 0\.0001"):
        export_portable(keras_model(), _spec(), "onnx", base, "digits")
    assert list((base / "digits").iterdir()) == []


def test_mixed_precision_model_exports_in_float32():
    """A run trained under mixed_bfloat16 saves bf16 layers; the export computes in float32 with
    the same weights, within bf16 rounding of the bf16 model."""
    _needs("onnx")
    from kerasdl.models.simple_cnn import SimpleCNN

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(1)
        mixed = SimpleCNN(num_classes=10, input_shape=(8, 8, 1), filters=[8], convs_per_stage=1)
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.get_layer("stage0_conv0").compute_dtype == "bfloat16"
    plain = float32_model(mixed)
    assert {layer.compute_dtype for layer in plain._flatten_layers()} == {"float32"}
    for a, b in zip(plain.weights, mixed.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    version = export_portable(mixed, _spec(), "onnx", fresh_dir("mixed"), "digits")
    x = digits_data()[0][:8]
    got = load_exported(version / "model.onnx")(x)["logits"]
    z = preprocess_images(x, _spec())
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(plain(z)), rtol=1e-4, atol=1e-5)
    bf16 = keras.ops.convert_to_numpy(mixed(z)).astype("float32")
    assert relative_error(got, bf16) < 5e-2


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_every_family_converts_with_parity(fmt):
    """The docs' table: every family's small case converts and matches (slow: minutes)."""
    _needs(fmt)
    from kerasdl.export.portability import format_parity

    table = format_parity(formats=(fmt,))
    failed = {name: row[fmt] for name, row in table.items() if row[fmt].get("rel", 1.0) > RTOL}
    assert not failed


def test_onnx_converts_grouped_convolution_and_exact_gelu():
    """ResNeXt's grouped convolutions (an XLA function on Keras's TF backend) and the ViT's exact
    GELU (TensorFlow's Erfc) convert to ONNX with parity (both failed with plain tf2onnx)."""
    _needs("onnx")
    from kerasdl.export.portability import format_parity

    table = format_parity(["resnext50_32x4d", "vit_ti_16"], formats=("onnx",))
    assert {name: row["onnx"].get("rel", 1.0) <= RTOL for name, row in table.items()} == {
        "resnext50_32x4d": True,
        "vit_ti_16": True,
    }, table


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_kerasdl_max_pooling_exports_as_the_standard_op(fmt):
    """kerasdl's max pools infer with MaxPoolV2 (no TFLite builtin): the converters get MaxPool,
    and the file matches the Keras model."""
    from kerasdl.layers.pooling import MaxPooling2D
    from kerasdl.layers.torch_compat import PaddedMaxPooling2D

    _needs(fmt)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = PaddedMaxPooling2D(3, strides=2, padding=1)(MaxPooling2D(3, 1, padding="same")(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    version = export_portable(model, _spec(), fmt, fresh_dir(f"maxpool-{fmt}"), "digits")
    batch = digits_data()[0][:5]
    got = load_exported(version / FILES[fmt])(batch)["logits"]
    want = keras.ops.convert_to_numpy(model(preprocess_images(batch, _spec())))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
