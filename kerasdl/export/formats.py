"""ONNX and LiteRT export: one self-contained file with the run's preprocessing, checked on export.

``kerasdl export RUN --format onnx|litert`` writes ``<out>/<name>/<version>/`` (the SavedModel's
layout, staged in a temporary folder and renamed into place by
:func:`kerasdl.export.layout.atomic_version_dir`)::

    model.onnx | model.tflite   input ``images``: float32 (batch, H, W, C) pixels in [0, 1];
                                outputs ``logits`` and ``probabilities`` (batch, classes)
    preprocess.json             the run's preprocessing spec (size, channels, mean/std, names)
    class_names.txt             one class name per line, index = class id

Like the SavedModel's ``serving_default`` signature, the file standardizes with the run's
mean/std itself: callers feed unstandardized pixels at the training size (resizing is theirs).
The conversion is Keras's own (``model.export(format="onnx")``, which runs tf2onnx, and
``format="litert"``, the TFLite converter), with the LiteRT op set limited to TFLite builtins so
the file runs on the plain LiteRT runtime (no Flex delegate). Before the version is renamed into
place the file is run (onnxruntime; the LiteRT interpreter) on random images and its outputs are
compared with the Keras model's; a difference above ``1e-4`` relative fails the export and leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kerasdl.errors import UserError, suggest

if TYPE_CHECKING:
    from kerasdl.data.preprocess import PreprocessSpec

FORMATS = ("saved_model", "onnx", "litert")
ALIASES = {"tflite": "litert", "savedmodel": "saved_model", "tf_saved_model": "saved_model"}
FILE_NAMES = {"onnx": "model.onnx", "litert": "model.tflite"}
DEFAULT_OUT = {"saved_model": "saved_models", "onnx": "exports", "litert": "exports"}
IMAGES_INPUT = "images"
OUTPUTS = ("logits", "probabilities")
CLASS_NAMES_FILE = "class_names.txt"
SPEC_FILE = "preprocess.json"
RTOL = 1e-4  # max |exported - keras| / max |keras|, per output
INSTALL = {
    "onnx": "pip install 'tf2onnx>=1.17,<2' 'onnx>=1.17,<2' 'onnxruntime>=1.20,<2'",
    "litert": "pip install 'ai-edge-litert>=2,<3' (or use TensorFlow's tf.lite.Interpreter)",
}


def check_format(fmt: str) -> str:
    """The canonical format name (``tflite`` is ``litert``); an unknown one is a UserError."""
    name = ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}.{suggest(fmt, FORMATS)}")
    return name


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max |want|``: the error relative to the output's scale (logits near
    zero make an element-wise relative error meaningless)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def float32_model(model: Any) -> Any:
    """``model`` itself when it computes in float32, else a float32 copy with the same weights.

    A run trained under mixed precision saves layers with a ``mixed_*`` dtype policy; ONNX and
    LiteRT export want float32 (Keras's ONNX exporter requires it), so the policies are rewritten
    in the serialized config and the weights copied over.
    """
    import keras

    layers = [model, *model._flatten_layers(include_self=False)]
    if all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in layers):
        return model

    def strip(value: Any) -> Any:  # only dtype policies: a layer may be named "mixed_5b"
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return {**value, "config": {**value.get("config", {}), "name": "float32"}}
            return {
                k: "float32" if k == "dtype" and str(v).startswith("mixed_") else strip(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        config = strip(keras.saving.serialize_keras_object(model))
        clone = keras.saving.deserialize_keras_object(config)
    finally:
        keras.config.set_dtype_policy(previous)
    clone.set_weights(model.get_weights())
    return clone


def inference_model(model: Any, spec: PreprocessSpec) -> Any:
    """A float32 Keras model from ``[0, 1]`` pixels to ``{"logits", "probabilities"}``.

    Args:
        model: a classifier returning logits ``(batch, classes)``.
        spec: its preprocessing; the mean/std standardization becomes part of the graph (as
            constants, so converters fold them).
    """
    import keras

    from kerasdl.export.saved_model import _check_model

    model = float32_model(model)
    _check_model(model, spec)
    inputs = keras.Input(spec.input_shape, name=IMAGES_INPUT)
    x = inputs
    if spec.mean:
        mean, std = [float(m) for m in spec.mean], [float(s) for s in spec.std]
        x = keras.layers.Lambda(
            lambda t: (t - keras.ops.convert_to_tensor(mean)) / keras.ops.convert_to_tensor(std),
            name="standardize",
        )(x)
    logits = model(x, training=False)
    probs = keras.layers.Softmax(name="softmax")(logits)
    return keras.Model(inputs, {"logits": logits, "probabilities": probs}, name="inference")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Converters print progress and warnings; keep them off the user's terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        tf2onnx_log = logging.getLogger("tf2onnx")
        level = tf2onnx_log.level
        tf2onnx_log.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            tf2onnx_log.setLevel(level)


def _input_signature(spec: PreprocessSpec) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec((None, *spec.input_shape), tf.float32, name=IMAGES_INPUT)]


def _unsupported_onnx_ops(path: Path) -> list[str]:
    """Node types of the ONNX graph that are no ONNX operator (tf2onnx leaves a TensorFlow op
    it cannot convert in the graph under its own name, and only logs it)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    bad = {
        n.op_type
        for n in graph.node
        if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type, n.domain)
    }
    return sorted(bad)


@functools.cache
def _register_erfc() -> None:
    """Teach tf2onnx TensorFlow's ``Erfc`` (exact GELU, ``tf.nn.gelu(approximate=False)``, is
    ``0.5 x erfc(-x / sqrt 2)``): ONNX has ``Erf``, so ``erfc(x) = 1 - erf(x)``, PyTorch's form."""
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype))
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])


@contextlib.contextmanager
def _grouped_conv_without_xla() -> Iterator[None]:
    """Keras's TensorFlow backend runs a grouped ``keras.layers.Conv2D`` inside an XLA-compiled
    ``tf.function``; tf2onnx cannot look inside it. While tracing for ONNX the convolution is
    emitted as a plain grouped ``Conv2D`` op, which tf2onnx converts to an ONNX ``Conv`` with
    ``group``. (kerasdl's own models emit that op anyway, :class:`~kerasdl.layers.torch_compat.
    GroupedConv2D`; this covers a ``keras.layers.Conv2D(groups>1)`` in any other model.)"""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as tf_nn

    real = tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        last = (data_format or keras_data_format()) == "channels_last"
        channels = inputs.shape[-1] if last else inputs.shape[1]
        if channels == kernel.shape[-2]:
            return real(inputs, kernel, strides, padding, data_format, dilation_rate)
        fmt = tf_nn._convert_data_format(data_format or keras_data_format(), len(inputs.shape))
        return tf.nn.convolution(
            inputs, kernel, strides, padding.upper(), data_format=fmt, dilations=dilation_rate
        )

    def keras_data_format() -> str:
        import keras

        return keras.config.image_data_format()

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = real


def _export_onnx(model: Any, spec: PreprocessSpec, path: Path) -> None:
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as err:
        raise UserError(f"ONNX export needs tf2onnx and onnx ({err}): {INSTALL['onnx']}") from err
    _register_erfc()
    try:
        with _quiet(), _grouped_conv_without_xla():
            model.export(str(path), format="onnx", input_signature=_input_signature(spec))
    except Exception as err:  # noqa: BLE001 - the converter's message names what it met
        raise UserError(f"ONNX conversion failed: {_first_line(err)}") from err
    bad = _unsupported_onnx_ops(path)
    if bad:
        raise UserError(f"ONNX conversion failed: tf2onnx has no conversion for {', '.join(bad)}.")


def _export_litert(model: Any, spec: PreprocessSpec, path: Path) -> None:
    import tensorflow as tf

    builtins_only = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    try:
        with _quiet():
            model.export(
                str(path),
                format="litert",
                input_signature=_input_signature(spec),
                target_spec=builtins_only,
            )
    except Exception as err:  # noqa: BLE001 - ConverterError and friends
        text = str(err)
        ops = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)
        if ops:
            raise UserError(
                "LiteRT conversion failed: not in the TFLite builtin op set: "
                f"{', '.join(sorted(set(ops)))}."
            ) from err
        raise UserError(f"LiteRT conversion failed: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def load_exported(path: str | Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function running an exported ``model.onnx`` / ``model.tflite`` on float32 images.

    Args:
        path: the file (``.onnx`` runs on onnxruntime, ``.tflite`` on the LiteRT interpreter:
            ``ai_edge_litert`` if installed, else TensorFlow's ``tf.lite.Interpreter``).

    Returns:
        ``run(images) -> {"logits": ..., "probabilities": ...}`` for ``images`` of shape
        ``(batch, H, W, C)``.

    Example:
        >>> run = load_exported("exports/digits/1/model.onnx")
        >>> run(np.zeros((2, 8, 8, 1), "float32"))["probabilities"].shape
        (2, 10)
    """
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise UserError(f"Running ONNX needs onnxruntime: {INSTALL['onnx']}") from err
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run_onnx(images: np.ndarray) -> dict[str, np.ndarray]:
            outs = session.run(None, {IMAGES_INPUT: np.asarray(images, np.float32)})
            return dict(zip(names, outs, strict=True))

        return run_onnx
    if path.suffix == ".tflite":
        runner = _litert_interpreter(path).get_signature_runner()

        def run_litert(images: np.ndarray) -> dict[str, np.ndarray]:
            with _no_native_stderr():
                return dict(runner(**{IMAGES_INPUT: np.asarray(images, np.float32)}))

        return run_litert
    raise UserError(f"Expected a .onnx or .tflite file. Received: {path}")


@contextlib.contextmanager
def _no_native_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null: the LiteRT runtime logs its XNNPACK notice from C++."""
    import os
    import sys

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _litert_interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            import tensorflow as tf
        except ImportError as err:
            hint = INSTALL["litert"]
            raise UserError(f"Running LiteRT needs a TFLite interpreter: {hint}") from err
        Interpreter = tf.lite.Interpreter  # noqa: N806 - deprecated in TF 2.21, still working
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_path=str(path))


def check_parity(
    path: str | Path, reference: Any, spec: PreprocessSpec, samples: int = 4, seed: int = 0
) -> dict[str, float]:
    """Run the exported file and ``reference`` on random ``[0, 1]`` images; compare outputs.

    Returns:
        ``{output name: relative error}`` (:func:`relative_error`).

    Raises:
        UserError: an output is missing or differs by more than :data:`RTOL`.
    """
    images = np.random.default_rng(seed).random((samples, *spec.input_shape), np.float32)
    want = {k: np.asarray(v) for k, v in reference(images, training=False).items()}
    got = load_exported(path)(images)
    errors = {k: relative_error(got[k], want[k]) if k in got else float("inf") for k in want}
    worst = max(errors, key=errors.get)
    if errors[worst] > RTOL:
        raise UserError(
            f"{Path(path).name} differs from the Keras model: '{worst}' relative error "
            f"{errors[worst]:.2e} > {RTOL:g} (not exported)."
        )
    return errors


def export_file(model: Any, spec: PreprocessSpec, fmt: str, path: str | Path) -> Any:
    """Convert ``model`` (with ``spec``'s standardization) to one ONNX or LiteRT file.

    Returns:
        The Keras inference model that was converted (the parity reference).
    """
    fmt = check_format(fmt)
    if fmt not in FILE_NAMES:
        raise UserError(f"export_file writes onnx or litert. Received: {fmt!r}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError("kerasdl export needs the TensorFlow backend (KERAS_BACKEND=tensorflow).")
    from kerasdl.layers.pooling import standard_max_pool

    reference = inference_model(model, spec)
    with standard_max_pool():  # MaxPool, not MaxPoolV2: no TFLite builtin
        (_export_onnx if fmt == "onnx" else _export_litert)(reference, spec, Path(path))
    return reference


def export_portable(
    model: Any,
    spec: PreprocessSpec,
    fmt: str,
    out: str | Path,
    name: str,
    version: int | None = None,
    verify: bool = True,
) -> Path:
    """Export ``model`` as ``out/name/version/model.{onnx,tflite}`` with its spec, atomically.

    Args:
        model: a Keras classifier returning logits.
        spec: its preprocessing spec.
        fmt: ``"onnx"`` or ``"litert"``.
        out: the base folder.
        name: the model name (a folder name).
        version: the version; default the next free integer.
        verify: run the file and compare it with the Keras model before renaming into place.

    Returns:
        The version folder written.
    """
    from kerasdl.export.layout import atomic_version_dir, free_version
    from kerasdl.export.saved_model import _class_names
    from kerasdl.export.source import check_name

    fmt = check_format(fmt)
    model_dir = Path(out) / check_name(name)
    version = free_version(model_dir, version)
    with atomic_version_dir(model_dir, version) as tmp:
        file = tmp / FILE_NAMES[fmt]
        reference = export_file(model, spec, fmt, file)
        if verify:
            check_parity(file, reference, spec)
        names = _class_names(spec, int(reference.outputs[0].shape[-1]))
        (tmp / CLASS_NAMES_FILE).write_text("\n".join(names) + "\n")
        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=2))
    return model_dir / str(version)


def export(
    source: str | Path,
    fmt: str = "saved_model",
    out: str | Path | None = None,
    name: str | None = None,
    version: int | None = None,
    verify: bool = True,
) -> Path:
    """Export a run folder or ``.keras`` file in any format (``kerasdl export``).

    Args:
        source: ``RUN_DIR`` (``best.keras`` + ``preprocess.json``) or a ``.keras`` file with a
            ``preprocess.json`` beside it.
        fmt: ``"saved_model"`` (default), ``"onnx"`` or ``"litert"``.
        out: the base folder; default ``saved_models`` for SavedModels, ``exports`` otherwise.
        name: the model name; default the run's.
        version: the version; default the next free integer.
        verify: ONNX/LiteRT only: check the file's outputs against the Keras model's.

    Example:
        >>> export("runs/quickstart/20260101-120000", fmt="onnx")
        PosixPath('exports/quickstart/1')
    """
    from kerasdl.export.source import resolve_source

    fmt = check_format(fmt)
    out = DEFAULT_OUT[fmt] if out is None else out
    if fmt == "saved_model":
        from kerasdl.export.saved_model import export_run

        return export_run(source, out=out, name=name, version=version)
    src = resolve_source(source)
    model = src.load_model()
    return export_portable(model, src.spec, fmt, out, name or src.default_name, version, verify)
