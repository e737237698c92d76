"""Multi-scale feature maps of any zoo CNN or ViT: ``create_model(name, features_only=True)``.

timm's ``features_only`` convention (``timm/models/_features.py`` ``FeatureInfo``, ``_builder.py``
``feature_cfg``): a model whose outputs are the feature maps at the end of each stage, the inputs
of a detection or segmentation head (FPN, U-Net decoder, ...), with ``model.feature_info``
describing them: one dict per output with

* ``num_chs``: channels of the map;
* ``reduction``: its nominal stride with respect to the input (2, 4, 8, 16, 32 for a ResNet);
* ``module``: the kerasdl layer whose output it is;
* ``index``: the stage's position in the family's stage list (what ``out_indices`` selects).

Each family declares its stages as data on its model class: ``feature_stages()`` returns
``[(layer name, reduction), ...]``, in timm's choice for the architectures timm has (ResNet,
DenseNet, EfficientNet, VGG, ViT, ...) and the same rule elsewhere (the last layer at each
resolution). A token model (the ViT) returns its blocks' outputs; its patch tokens, without the
class token, become a ``(H/p, W/p, D)`` map (timm's ``forward_intermediates``, ``norm=False``),
and by default the last three blocks are returned (its ``default_out_indices``, as timm).

The feature model is built on the classifier's own layers: it shares their weights (weights
loaded into the classifier are the feature model's), trains them, and is a registered
``keras.Model`` subclass whose config is the classifier's config plus ``out_indices``, so it
saves to and loads from ``.keras`` with its ``feature_info``.

Example:
    >>> model = kerasdl.create_model("resnet50", features_only=True, out_indices=[1, 2, 3, 4],
    ...                              input_shape=(256, 256, 3))
    >>> model.feature_info.channels(), model.feature_info.reduction()
    ([256, 512, 1024, 2048], [4, 8, 16, 32])
    >>> maps = model.predict(images)  # a list of four (B, H/r, W/r, C) arrays

Reference:
    Wightman, PyTorch Image Models (timm): ``timm/models/_features.py``, ``_builder.py``
    (``features_only``, ``out_indices``), ``vision_transformer.py`` (``forward_intermediates``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerasdl.errors import UserError

FeatureStage = tuple[str, int]  # (layer name, reduction)


class FeatureInfo(list):
    """``model.feature_info``: a list with one dict per output (``num_chs``, ``reduction``,
    ``module``, ``index``), plus timm's accessors.

    Example:
        >>> info = model.feature_info
        >>> info.channels(), info.reduction(), info.module_name()
    """

    def channels(self) -> list[int]:
        """Channels of each output."""
        return [d["num_chs"] for d in self]

    def reduction(self) -> list[int]:
        """Nominal stride (input side / map side) of each output."""
        return [d["reduction"] for d in self]

    def module_name(self) -> list[str]:
        """The layer each output comes from."""
        return [d["module"] for d in self]


@keras.saving.register_keras_serializable(package="kerasdl")
class TokensToMap(keras.layers.Layer):
    """Patch tokens as a feature map: drop the prefix (class) tokens, reshape to a grid.

    Args:
        num_prefix_tokens: leading non-patch tokens to drop (1 for ViT's class token).
        grid: ``(H/p, W/p)``, the patch grid.

    Call arguments:
        inputs: ``(B, prefix + H/p * W/p, D)`` tokens.

    Example:
        >>> TokensToMap(1, (4, 4))(keras.ops.ones((2, 17, 8))).shape
        (2, 4, 4, 8)
    """

    def __init__(self, num_prefix_tokens: int, grid: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid = tuple(int(g) for g in grid)

    def call(self, inputs):
        x = inputs[:, self.num_prefix_tokens :]  # (B, N, D)
        return ops.reshape(x, (-1, *self.grid, ops.shape(x)[-1]))  # (B, H/p, W/p, D)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.grid, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_prefix_tokens": self.num_prefix_tokens,
            "grid": list(self.grid),
        }


def feature_stages(model: keras.Model) -> list[FeatureStage]:
    """The stages ``model``'s family declares (``model.feature_stages()``), checked.

    Raises:
        UserError: the model has no stage feature maps (MLPs, the perceptron, non-kerasdl models).
    """
    declare = getattr(model, "feature_stages", None)
    if not callable(declare):
        raise UserError(
            f"features_only: {type(model).__name__} ({model.name!r}) has no stage feature maps; "
            f"it works for the families {', '.join(supported_families())}."
        )
    return [(str(layer), int(reduction)) for layer, reduction in declare()]


def supported_models() -> list[str]:
    """Registry names of the models ``features_only`` supports (their class declares stages)."""
    from kerasdl.registry import get_entry, list_models

    return [n for n in list_models() if hasattr(get_entry(n).builder, "feature_stages")]


def supported_families() -> list[str]:
    """Families of the models ``features_only`` supports."""
    from kerasdl.registry import get_entry

    return sorted({get_entry(n).family for n in supported_models()})


def resolve_out_indices(
    num_stages: int, out_indices: int | Sequence[int] | None, default: int | None, label: str
) -> list[int]:
    """Absolute stage indices from timm's ``out_indices`` forms.

    Args:
        num_stages: how many stages the model has.
        out_indices: ``None`` (the family's default: all stages, or the last ``default``),
            an int ``n`` (the last ``n`` stages, as timm) or a sequence of indices (negative ones
            count from the end). The result is in stage order, as timm returns the maps.
        default: the family's default last-``n`` (ViT: 3), or ``None`` for all stages.
        label: how the error message names the model.

    Raises:
        UserError: an index out of range, a repeated index, or a value that is not an index.
    """
    valid = f"valid: 0 to {num_stages - 1}, or -{num_stages} to -1"
    if out_indices is None:
        n = num_stages if default is None else min(default, num_stages)
        return list(range(num_stages - n, num_stages))
    if _is_index(out_indices):
        if not 0 < out_indices <= num_stages:
            raise UserError(
                f"{label}: out_indices={out_indices} asks for the last {out_indices} stages of "
                f"{num_stages} (valid: 1 to {num_stages})."
            )
        return list(range(num_stages - int(out_indices), num_stages))
    if isinstance(out_indices, str) or not isinstance(out_indices, Sequence):
        raise UserError(
            f"{label}: out_indices must be a list of stage indices or an int (the last n). "
            f"Received: {out_indices!r}"
        )
    taken: list[int] = []
    for i in out_indices:
        if not _is_index(i) or not -num_stages <= i < num_stages:
            raise UserError(
                f"{label}: out_indices {list(out_indices)}: {i!r} is not a stage index of this "
                f"model's {num_stages} stages ({valid})."
            )
        index = int(i) % num_stages
        if index in taken:
            raise UserError(
                f"{label}: out_indices {list(out_indices)} names stage {index} twice ({valid})."
            )
        taken.append(index)
    if not taken:
        raise UserError(f"{label}: out_indices is empty ({valid}).")
    return sorted(taken)


def _as_list(outputs: Any) -> list[Any]:
    """A list even for one output (Keras unpacks a single output; timm always returns a list)."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@keras.saving.register_keras_serializable(package="kerasdl")
class FeatureModel(keras.Model):
    """A zoo classifier's stage feature maps as a model (timm's ``features_only``).

    Built on the classifier's own layers: the two share weights. Its config is the classifier's
    serialised config and ``out_indices``; loading rebuilds the classifier from it and keeps only
    the layers the features use.

    Args:
        backbone: a kerasdl classifier (a model whose class has ``feature_stages()``), or its
            ``keras.saving.serialize_keras_object`` dict (how a saved model comes back).
        out_indices: stages to return (see :func:`resolve_out_indices`); ``None`` for the
            family's default (all stages; the last three blocks of a ViT). The maps come in
            stage order whatever the order given (as timm's), and ``feature_info`` follows them.

    Call arguments:
        inputs: images ``(B, H, W, C)``, as the classifier takes them.

    Returns (on call):
        A list of ``(B, H_i, W_i, C_i)`` maps, one per ``feature_info`` entry (a list even for
        one map, as timm).

    Example:
        >>> clf = kerasdl.create_model("resnet18", input_shape=(64, 64, 3))
        >>> feats = FeatureModel(clf, out_indices=[-2, -1])
        >>> [f.shape for f in feats(np.zeros((1, 64, 64, 3)))]
        [TensorShape([1, 4, 4, 256]), TensorShape([1, 2, 2, 512])]

    Reference:
        timm ``FeatureListNet`` / ``FeatureGetterNet`` (``timm/models/_features.py``).
    """

    def __init__(
        self,
        backbone: keras.Model | dict[str, Any],
        out_indices: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        label = f"features_only ({type(backbone).__name__})"
        stages = feature_stages(backbone)
        default = getattr(backbone, "default_out_indices", None)
        indices = resolve_out_indices(len(stages), out_indices, default, label)
        outputs, info = [], []
        for index in indices:
            layer_name, reduction = stages[index]
            x = backbone.get_layer(layer_name).output
            if len(x.shape) == 3:  # tokens (B, prefix + N, D): the patch grid as a map
                grid = backbone.patch_embed.grid_size
                x = TokensToMap(backbone.num_prefix_tokens, grid, name=f"{layer_name}_map")(x)
            outputs.append(x)
            info.append(
                {
                    "num_chs": int(x.shape[-1]),
                    "reduction": reduction,
                    "module": layer_name,
                    "index": index,
                }
            )
        kwargs.setdefault("name", f"{backbone.name}_features")
        inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # Plain data, kept out of Keras's attribute tracking (which would wrap it).
        object.__setattr__(self, "_backbone_config", keras.saving.serialize_keras_object(backbone))
        object.__setattr__(self, "_out_indices", indices)
        object.__setattr__(self, "_feature_info", info)
        report = getattr(backbone, "weights_report", None)  # a checkpoint's source, preprocessing
        if report is not None:
            object.__setattr__(self, "weights_report", report)

    @property
    def feature_info(self) -> FeatureInfo:
        """One dict per output: ``num_chs``, ``reduction``, ``module``, ``index`` (timm's keys)."""
        return FeatureInfo(dict(d) for d in self._feature_info)

    @property
    def out_indices(self) -> list[int]:
        """The stages returned, as absolute indices."""
        return list(self._out_indices)

    def call(self, inputs, training=None, mask=None, **kwargs):
        return _as_list(super().call(inputs, training=training, mask=mask, **kwargs))

    def compute_output_spec(self, inputs, training=None, mask=None):
        return _as_list(super().compute_output_spec(inputs, training=training, mask=mask))

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self._backbone_config,
            "out_indices": list(self._out_indices),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> FeatureModel:
        return cls(**config)


def features_model(
    model: keras.Model, out_indices: int | Sequence[int] | None = None, name: str | None = None
) -> FeatureModel:
    """The stage feature maps of a zoo classifier (``create_model(..., features_only=True)``).

    Args:
        model: a kerasdl CNN or ViT classifier (its weights are shared, not copied).
        out_indices: stages to return: ``None`` (all; a ViT's last three blocks), an int ``n``
            (the last ``n``) or indices (negative ones count from the end).
        name: the feature model's name (default ``"<model name>_features"``).

    Returns:
        A :class:`FeatureModel` with ``feature_info``.

    Raises:
        UserError: a model without stages (MLP, perceptron) or an invalid ``out_indices``.

    Example:
        >>> feats = features_model(kerasdl.create_model("densenet121"), out_indices=[-1])
        >>> feats.feature_info
        [{'num_chs': 1024, 'reduction': 32, 'module': 'act5', 'index': 4}]
    """
    kwargs = {"name": name} if name else {}
    return FeatureModel(model, out_indices=out_indices, **kwargs)


def feature_table(names: Sequence[str] | None = None) -> str:
    """A Markdown table of supported registry models' stages (``docs/features.md``): each
    stage's ``channels/reduction`` (``x n`` for ``n`` alike stages in a row) and the default
    outputs. Builds each model (every supported one by default: minutes, and gigabytes for
    ViT-H)."""
    from kerasdl.registry import create_model, get_entry

    rows = ["| model | stages: channels/reduction | default outputs |", "|---|---|---|"]
    for name in names or supported_models():
        smallest = get_entry(name).min_input
        side = smallest * math.ceil(64 / smallest)  # >= 64 and a multiple (ViT patches)
        clf = create_model(name, num_classes=0, input_shape=(side, side, 3))
        stages = feature_stages(clf)
        default = resolve_out_indices(
            len(stages), None, getattr(clf, "default_out_indices", None), name
        )
        info = FeatureModel(clf, out_indices=list(range(len(stages)))).feature_info
        cells = [f"{d['num_chs']}/{d['reduction']}" for d in info]
        runs: list[list[Any]] = []
        for cell in cells:
            if runs and runs[-1][0] == cell:
                runs[-1][1] += 1
            else:
                runs.append([cell, 1])
        shown = " ".join(c if n == 1 else f"{c} x{n}" for c, n in runs)
        chosen = "all" if len(default) == len(stages) else f"last {len(default)}"
        rows.append(f"| `{name}` | {shown} | {chosen} |")
        keras.backend.clear_session()
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m kerasdl.models.features [NAME ...]: the docs table
    import sys

    print(feature_table(sys.argv[1:] or None), end="")
