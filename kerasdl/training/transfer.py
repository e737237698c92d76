"""Transfer learning: start from an earlier run's weights, then train with a strategy.

``model.init_from`` names a run folder (its ``best.keras`` is used) or a ``.keras`` file. Its
weights are copied into the newly built model layer by layer, matched by layer name; a layer
whose weight shapes differ (typically the ``head`` when the class count changed) keeps its fresh
initialization and is reported, as are layers the source does not have.

Strategies (Yosinski et al. 2014 for why transfer works; Howard & Ruder 2018 for the last two):

* ``feature_extraction``: every layer except the ``head`` is frozen (``trainable = False``; Keras
  then also runs batch normalization in inference mode), only the new head learns.
* ``fine_tune``: everything learns, the backbone with ``lr * backbone_lr_multiplier`` and the head
  with ``lr`` (a real per-group learning rate, :mod:`kerasdl.training.group_optimizer`).
* ``gradual_unfreeze``: training starts with only the head trainable; every ``unfreeze_every``
  epochs one more *stage* becomes trainable, from the head backwards (ULMFiT's gradual unfreezing),
  optionally with the backbone's lower learning rate as well.

A *stage* is a group of top-level layers with weights. By default consecutive layers whose names
share the part before the first ``_`` form one stage, so ``stage1_conv0`` + ``stage1_norm0`` are
stage ``stage1``, ResNet's ``layer4_0`` + ``layer4_1`` are ``layer4``, EfficientNet's
``top_conv`` + ``top_bn`` are ``top``, and an ungrouped layer (``conv1``, ``fc7``) is a stage of its
own. A recipe can give the stages explicitly as name prefixes (``stages: [fc, stage2, stage1]``,
head excluded, from the head backwards; layers matching no prefix then stay frozen).

References:
    Yosinski, Clune, Bengio & Lipson, "How transferable are features in deep neural networks?",
    NeurIPS 2014. Howard & Ruder, "Universal Language Model Fine-tuning for Text
    Classification", ACL 2018.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdl.errors import UserError
from kerasdl.models.base import HEAD
from kerasdl.runfolder import RunFolder
from kerasdl.training.group_optimizer import with_lr_multipliers

STRATEGIES = ("full", "feature_extraction", "fine_tune", "gradual_unfreeze")


@dataclass
class TransferReport:
    """What :func:`load_matching_weights` copied.

    Attributes:
        source: the ``.keras`` file read.
        loaded: layer names whose weights were copied.
        skipped: ``{layer name: reason}`` for layers present in both with different shapes.
        missing: layers with weights that the source does not have (fresh initialization).
    """

    source: Path
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"Initialized from {self.source}: {len(self.loaded)} layers loaded"]
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        if self.missing:
            lines.append(f"  not in the source (fresh): {', '.join(self.missing)}")
        return "\n".join(lines)


def resolve_init_from(init_from: str | Path) -> Path:
    """The ``.keras`` file named by ``model.init_from`` (a run folder means its ``best.keras``)."""
    path = Path(init_from)
    if not path.exists():
        raise UserError(f"model.init_from: no such run folder or .keras file: {init_from}")
    if path.is_dir():
        path = RunFolder(path).best
        if not path.is_file():
            raise UserError(f"model.init_from: {init_from} has no best.keras (not a run folder?)")
        return path
    if path.suffix != ".keras":
        raise UserError(f"model.init_from: expected a run folder or a .keras file. Got: {path}")
    return path


def load_matching_weights(
    model: keras.Model, source: str | Path | keras.Model, skip: tuple[str, ...] | list[str] = ()
) -> TransferReport:
    """Copy the weights of every same-named, same-shaped layer of ``source`` into ``model``.

    Args:
        model: the newly built model.
        source: a run folder, a ``.keras`` file or a model.
        skip: layer names never loaded, e.g. ``("head",)`` for a new task with as many classes
            as the old one.

    Returns:
        A :class:`TransferReport`.
    """
    if isinstance(source, keras.Model):
        src, src_path = source, Path(source.name)
    else:
        from kerasdl.training.evaluation import load_trained_model

        src_path = resolve_init_from(source)
        src = load_trained_model(src_path)
    report = TransferReport(src_path)
    src_layers = {layer.name: layer for layer in src.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        other = src_layers.get(layer.name)
        if layer.name in skip:
            report.skipped[layer.name] = "not loaded (new task)"
            continue
        if other is None or not other.weights:
            report.missing.append(layer.name)
            continue
        new = [tuple(w.shape) for w in layer.weights]
        old = [tuple(w.shape) for w in other.weights]
        if new != old:
            report.skipped[layer.name] = f"shapes {old} in the source, {new} here"
            continue
        layer.set_weights(other.get_weights())
        report.loaded.append(layer.name)
    if not report.loaded:
        raise UserError(
            f"model.init_from: no layer of {src_path} matches the model by name and shape "
            "(a different architecture?)"
        )
    return report


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers of ``model`` that own weights, in graph order."""
    return [layer for layer in model.layers if layer.weights]


def stages(model: keras.Model, prefixes: list[str] | None = None) -> list[list[keras.layers.Layer]]:
    """The unfreezing stages of ``model``, from the head backwards; ``stages[0]`` is the head.

    Args:
        model: a kerasdl classifier (its last layer with weights is named ``head``).
        prefixes: layer-name prefixes, one per stage from the head backwards (head excluded);
            default: consecutive layers sharing the name part before the first ``_``.
    """
    layers = weighted_layers(model)
    head = [layer for layer in layers if layer.name == HEAD]
    if not head:
        raise UserError("transfer learning needs a classifier with a layer named 'head'")
    body = [layer for layer in layers if layer.name != HEAD]
    if prefixes:
        out: list[list[keras.layers.Layer]] = [head]
        for p in prefixes:
            group = [layer for layer in body if layer.name.startswith(p)]
            if not group:
                raise UserError(f"training.transfer.stages: no layer name starts with {p!r}")
            out.append(group)
        return out
    groups: list[list[keras.layers.Layer]] = []
    for layer in body:
        key = layer.name.split("_", 1)[0]
        if groups and groups[-1][0].name.split("_", 1)[0] == key:
            groups[-1].append(layer)
        else:
            groups.append([layer])
    return [head, *reversed(groups)]


def set_trainable_stages(model: keras.Model, stage_list: list[list[Any]], n: int) -> None:
    """Make the first ``n`` stages (head first) trainable and every other layer frozen."""
    on = {id(layer) for group in stage_list[:n] for layer in group}
    for layer in weighted_layers(model):
        layer.trainable = id(layer) in on


def freeze_backbone(model: keras.Model) -> None:
    """Feature extraction: freeze every layer but the head."""
    set_trainable_stages(model, stages(model), 1)


def transfer_optimizer(
    optimizer: keras.optimizers.Optimizer, backbone_lr_multiplier: float
) -> keras.optimizers.Optimizer:
    """``optimizer`` with the backbone at ``lr * backbone_lr_multiplier``, the head at ``lr``."""
    if backbone_lr_multiplier == 1.0:
        return optimizer
    return with_lr_multipliers(optimizer, {f"{HEAD}/": 1.0}, default=backbone_lr_multiplier)


def prebuild_optimizer(model: keras.Model) -> None:
    """Build the compiled optimizer for every layer that may ever train (frozen ones included),
    so that layers unfrozen later in ``fit`` have optimizer slots. Call after ``compile``."""
    opt = model.optimizer
    if opt is None or opt.built:
        return
    saved = [(layer, layer.trainable) for layer in weighted_layers(model)]
    for layer, _ in saved:
        layer.trainable = True
    variables = list(model.trainable_variables)
    for layer, flag in saved:
        layer.trainable = flag
    opt.build(variables)


class GradualUnfreeze(keras.callbacks.Callback):
    """Unfreeze one more stage every ``every`` epochs, from the head backwards (ULMFiT).

    Epochs ``[0, every)`` train the head only, ``[every, 2 every)`` the head and the last stage,
    and so on. The compiled optimizer must know all variables: call :func:`prebuild_optimizer`
    after ``compile``. The train function is re-traced when the trainable set changes.

    Args:
        every: epochs between unfreezing steps (``k``).
        prefixes: explicit stages (see :func:`stages`); default automatic.
        verbose: print each change.

    Example:
        >>> model.compile(optimizer="adam", loss=...)
        >>> prebuild_optimizer(model)
        >>> model.fit(ds, epochs=9, callbacks=[GradualUnfreeze(every=3)])

    Reference:
        Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", 2018.
    """

    def __init__(self, every: int, prefixes: list[str] | None = None, verbose: bool = True) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1. Received: {every}")
        self.every = int(every)
        self.prefixes = list(prefixes) if prefixes else None
        self.verbose = verbose
        self.history: list[tuple[int, int]] = []  # (epoch, stages trainable)
        self._active = -1

    def stages_at(self, epoch: int, n_stages: int) -> int:
        """Number of trainable stages during ``epoch`` (0-based)."""
        return min(1 + epoch // self.every, n_stages)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        stage_list = stages(self.model, self.prefixes)
        n = self.stages_at(epoch, len(stage_list))
        if n == self._active:
            return
        opt = self.model.optimizer
        set_trainable_stages(self.model, stage_list, n)
        if opt is not None and opt.built:
            inner = getattr(opt, "inner_optimizer", opt)
            known = inner._trainable_variables_indices
            unknown = [
                v.path for v in self.model.trainable_variables if inner._var_key(v) not in known
            ]
            if unknown:
                raise UserError(
                    "gradual unfreezing: the optimizer was built without "
                    f"{unknown[0]}; call prebuild_optimizer(model) after compile"
                )
        self.model.make_train_function(force=True)
        self._active = n
        self.history.append((epoch, n))
        if self.verbose:
            names = [g[0].name.split("_", 1)[0] for g in stage_list[:n]]
            print(
                f"\nEpoch {epoch + 1}: training {n}/{len(stage_list)} stages ({', '.join(names)})"
            )


def setup_transfer(
    model: keras.Model,
    strategy: str,
    *,
    unfreeze_every: int = 1,
    stage_prefixes: list[str] | None = None,
) -> list[keras.callbacks.Callback]:
    """Set the trainable layers for ``strategy`` (call before ``compile``); returns the callbacks
    the strategy needs (:class:`GradualUnfreeze` for ``gradual_unfreeze``)."""
    if strategy not in STRATEGIES:
        raise UserError(
            f"training.transfer.strategy: expected one of {STRATEGIES}. Got {strategy!r}"
        )
    if strategy == "feature_extraction":
        freeze_backbone(model)
    elif strategy == "gradual_unfreeze":
        stage_list = stages(model, stage_prefixes)
        set_trainable_stages(model, stage_list, 1)
        return [GradualUnfreeze(unfreeze_every, stage_prefixes)]
    return []


def weights_snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    """A copy of every weight by path (to compare before/after)."""
    return {w.path: np.array(w) for w in model.weights}
