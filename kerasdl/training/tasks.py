"""Tasks: what a kind of training run is, told to the runner through one protocol.

The runner (:mod:`kerasdl.training.runner`) owns the run folder, the distribution strategy, the
backups and the loop; a task owns what it trains and how it is measured:

========================  =================================================================
``plan`` (static)         the run's settings (:class:`RunPlan`: epochs, batch, devices, ...)
``build``                 the model ``fit`` trains (compiled), built under the strategy scope
``datasets``              ``train`` / ``val`` / ``test`` batches (``epoch``: deterministic order)
``steps_per_epoch``       optimizer steps per epoch
``fit_steps``             steps per epoch to pass to ``fit`` (None: the data's own length)
``monitor``               ``training.monitor: auto`` and the check of an explicit monitor
``callbacks``             what the task adds to the run's callbacks (checkpoints of its own)
``progress``              the callbacks that show progress (when the run is verbose)
``keep``                  the model ``best.keras`` holds
``results``               what the finished run writes besides; ``metrics.json``'s content
========================  =================================================================

:class:`SupervisedTask` trains the recipe's classifier; :class:`MethodTask` wraps it in the
recipe's ``method:`` (semi- or self-supervised), whose kind
(:mod:`kerasdl.methods.kinds`) supplies the data, the monitor and the measurement;
:class:`kerasdl.nas.task.SearchTask` is the DARTS search. :func:`task_class` picks one from the
recipe; the runner never asks which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from kerasdl.config import DistributeConfig, RecipeConfig
from kerasdl.data import DataBundle
from kerasdl.data.datasets import eval_dataset, make_datasets
from kerasdl.errors import UserError
from kerasdl.models.base import HEAD
from kerasdl.registry import create_model
from kerasdl.runfolder import RunFolder
from kerasdl.training import callbacks as cb
from kerasdl.training.initializers import apply_initializer
from kerasdl.training.optimizers import build_optimizer, exclude_from_decay
from kerasdl.training.regularizers import add_kernel_penalties
from kerasdl.training.schedules import build_schedule
from kerasdl.training.transfer import (
    load_matching_weights,
    prebuild_optimizer,
    setup_transfer,
    transfer_optimizer,
)
from kerasdl.weights import checkpoint_preprocessing, report_printed


def build_model(cfg: RecipeConfig, bundle: DataBundle) -> keras.Model:
    """The recipe's model, with ``num_classes``/``input_shape`` from the data unless given,
    started from ``model.weights`` when set (its report is printed)."""
    kwargs = cfg.model.kwargs()
    kwargs.setdefault("num_classes", bundle.num_classes)
    kwargs.setdefault("input_shape", list(bundle.spec.input_shape))
    weights = cfg.model.weights
    if weights and cfg.model.init_from:
        raise UserError(
            "model.weights and model.init_from both name weights to start from: keep one."
        )
    try:
        with report_printed():
            model = create_model(cfg.model.name, weights=weights, **kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"model ({cfg.model.name}): {err}") from None
    if weights:
        print(model.weights_report.text())
    if cfg.model.init is not None:
        apply_initializer(model, cfg.model.init.name, cfg.model.init.mode, seed=cfg.run.seed)
    if cfg.model.init_from:
        skip = () if cfg.training.transfer.reuse_head else (HEAD,)
        print(load_matching_weights(model, cfg.model.init_from, skip=skip).text())
    if cfg.training.l1 or cfg.training.l2:
        add_kernel_penalties(model, cfg.training.l1, cfg.training.l2)
    return model


def use_checkpoint_preprocessing(cfg: RecipeConfig, bundle: DataBundle) -> None:
    """Standardise the data as ``model.weights``'s source did.

    With ``model.weights`` and no ``data.mean`` / ``data.std`` in the recipe, both are set from
    the checkpoint (torchvision's ImageNet statistics, timm's ``pretrained_cfg``, or what a
    ``kerasdl convert`` file recorded), in the recipe (so the run's ``config.yaml`` shows them)
    and in the data's spec (``preprocess.json``, which the export applies). A recipe that sets
    them keeps its own, with a note when they differ; so does a ``data.interpolation`` other
    than the source's resize filter (the data are resized as they load, before this runs).
    """
    if not cfg.model.weights:
        return
    source, prep = checkpoint_preprocessing(cfg.model.weights, cfg.model.name)
    if prep is None:
        return
    mean, std = [float(v) for v in prep.mean], [float(v) for v in prep.std]
    if bundle.spec.channels != len(mean):
        return  # grayscale data: the checkpoint's first convolution names the mismatch
    data = cfg.data
    if prep.interpolation != data.interpolation and prep.interpolation in ("bilinear", "bicubic"):
        print(  # the data are resized as they load, before the task: a note, not a change
            f"model.weights: the checkpoint's source resizes with {prep.interpolation} "
            f"interpolation, this recipe with {data.interpolation} (set data.interpolation: "
            f"{prep.interpolation} to match)"
        )
    if cfg.data.mean:
        if list(cfg.data.mean) != mean or list(cfg.data.std) != std:
            print(
                f"model.weights: the recipe's data.mean/std are kept; the checkpoint "
                f"({source}) was trained with mean {mean} std {std}"
            )
        return
    cfg.data = cfg.data.model_copy(update={"mean": mean, "std": std})
    bundle.spec.mean, bundle.spec.std = list(mean), list(std)
    print(f"model.weights: data.mean/std set from the checkpoint: {prep.text()}")


def compile_model(
    model: keras.Model, cfg: RecipeConfig, steps_per_epoch: int, lr_factor: float = 1.0
) -> None:
    """Compile a classifier with the recipe's optimizer, schedule, loss and metrics.

    ``lr_factor`` multiplies the recipe's learning rate (the distribution's scaling rule).
    """
    t = cfg.training
    optimizer = _optimizer(cfg, steps_per_epoch, lr_factor)
    optimizer = transfer_optimizer(optimizer, t.optimizer.backbone_lr_multiplier)
    exclude_from_decay(optimizer, model, t.optimizer.decay_exclude)
    model.compile(
        optimizer=optimizer,
        loss=classifier_loss(cfg),
        metrics=classifier_metrics(t.metrics),
        steps_per_execution=t.execution_steps(cfg.distribute.strategy != "none"),
        jit_compile=t.jit_compile,
    )
    if t.transfer.strategy == "gradual_unfreeze":
        prebuild_optimizer(model)  # slots for the layers that unfreeze later


def classifier_loss(cfg: RecipeConfig) -> keras.losses.Loss:
    """The recipe's loss for a classifier's logits and one-hot labels (``training.loss``)."""
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=cfg.training.loss.label_smoothing
    )


def classifier_metrics(names: list[str]) -> list[keras.metrics.Metric]:
    """The metrics of ``training.metrics`` (``accuracy``, ``top5``) for one-hot labels."""
    metrics: list[keras.metrics.Metric] = []
    if "accuracy" in names:
        metrics.append(keras.metrics.CategoricalAccuracy(name="accuracy"))
    if "top5" in names:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    return metrics


def _optimizer(cfg: RecipeConfig, steps_per_epoch: int, lr_factor: float) -> Any:
    t = cfg.training
    base_lr = t.optimizer.learning_rate * lr_factor
    return build_optimizer(
        t.optimizer, build_schedule(t.schedule, base_lr, steps_per_epoch, t.epochs)
    )


def evaluate_model(model: keras.Model, dataset: Any) -> dict[str, float]:
    """Loss and compiled metrics of ``model`` on a batched dataset."""
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


def method_execution_steps(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to ``requested``.

    Method runs train on a repeated dataset with ``steps_per_epoch``; Keras then rounds each epoch
    up to whole executions (79 steps with 16 per execution ran 80), which would shift the
    schedule and the step budget. A divisor keeps every epoch exact.
    """
    return max(
        d for d in range(1, max(min(requested, steps_per_epoch), 1) + 1) if not steps_per_epoch % d
    )


@dataclass(frozen=True)
class RunPlan:
    """What the runner needs of a recipe besides its task: the loop's settings.

    ``keep_best``: track the monitored metric and keep the best model in ``best.keras``.
    """

    epochs: int
    batch_size: int
    seed: int = 0
    precision: str = "float32"
    inter_op_threads: int | str = 0
    model_name: str | None = None
    deterministic: bool = False
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    lr_scaling: str = "none"
    base_batch_size: int | None = None
    early_stopping_patience: int = 0
    log_images: int = 0
    log_grad_norm: bool = False
    ema: bool = False
    keep_best: bool = True


class SupervisedTask:
    """Train the recipe's classifier on labelled batches (the default task).

    Args:
        cfg: the validated recipe.
        bundle: its data.
    """

    deterministic = True  # supports run.deterministic

    def __init__(self, cfg: RecipeConfig, bundle: DataBundle) -> None:
        self.cfg = cfg
        self.bundle = bundle
        use_checkpoint_preprocessing(cfg, bundle)
        self.classifier: keras.Model | None = None
        #: callbacks every worker runs (gradual unfreezing), set by :meth:`build`
        self.worker_callbacks: list[keras.callbacks.Callback] = []
        #: the trained model when it holds exactly best.keras's weights (set by the runner)
        self.best_in_memory: keras.Model | None = None

    @staticmethod
    def plan(cfg: RecipeConfig) -> RunPlan:
        """The loop's settings from the recipe's ``training:``, ``distribute:`` and ``run:``."""
        t = cfg.training
        return RunPlan(
            epochs=t.epochs,
            batch_size=t.batch_size,
            seed=cfg.run.seed,
            precision=t.precision,
            inter_op_threads=t.inter_op_threads,
            model_name=cfg.model.name,
            deterministic=cfg.run.deterministic,
            distribute=cfg.distribute,
            lr_scaling=t.lr_scaling.rule,
            base_batch_size=t.lr_scaling.base_batch_size,
            early_stopping_patience=t.early_stopping_patience,
            log_images=t.log_images,
            log_grad_norm=t.log_grad_norm,
            ema=bool(t.optimizer.ema),
        )

    def steps_per_epoch(self) -> int:
        """Batches in one pass over the training split (the last one may be short)."""
        return max(math.ceil(self.bundle.size("train") / self.cfg.training.batch_size), 1)

    def _build_classifier(self) -> keras.Model:
        """The recipe's model with its transfer-learning set-up (frozen layers, unfreezing)."""
        self.classifier = build_model(self.cfg, self.bundle)
        tr = self.cfg.training.transfer
        self.worker_callbacks = setup_transfer(
            self.classifier,
            tr.strategy,
            unfreeze_every=tr.unfreeze_every,
            stage_prefixes=tr.stages or None,
        )
        return self.classifier

    def monitor(self, has_val: bool) -> str:
        """The monitored metric (``training.monitor``; ``auto`` resolved), checked."""
        t = self.cfg.training
        if t.monitor != "auto":
            monitor = t.monitor
        else:
            monitor = self._auto_monitor(has_val)
        if not has_val and monitor.startswith("val_"):
            raise UserError("training.monitor needs a validation split (data.val_split > 0)")
        known = self.logged()
        if known is not None and monitor not in known:
            raise UserError(
                f"training.monitor: {monitor!r} is not logged by this recipe. "
                f"Expected one of: auto, {', '.join(known)}."
            )
        return monitor

    def _auto_monitor(self, has_val: bool) -> str:
        return "val_accuracy" if has_val else "accuracy"

    def logged(self) -> list[str] | None:
        """The names the run logs, when known before it starts."""
        t = self.cfg.training
        logged = ["loss", *t.metrics] + (["grad_norm"] if t.log_grad_norm else [])
        return logged + [f"val_{m}" for m in logged if m != "grad_norm"]

    def datasets(self, epoch: Any | None = None) -> dict[str, Any]:
        """Batched ``train`` / ``val`` / ``test`` datasets."""
        return make_datasets(self.cfg, self.bundle, epoch=epoch)

    def build(self, steps_per_epoch: int, lr_factor: float) -> keras.Model:
        """The compiled model ``fit`` trains (call under the strategy's scope)."""
        model = self._build_classifier()
        compile_model(model, self.cfg, steps_per_epoch, lr_factor)
        return model

    def fit_steps(self, steps_per_epoch: int) -> int | None:
        """``steps_per_epoch`` for ``fit``: None, the finite training set is one epoch."""
        return None

    def callbacks(self, model: keras.Model, run_dir: Path, sample: Any, monitor: str) -> list:
        """Callbacks of the task's own that write the run folder (none for a classifier)."""
        return []

    def progress(self, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        """Keras's progress bar, counting the optimizer steps that ran."""
        return [cb.StepProgbar(steps_per_epoch)]

    def keep(self, model: keras.Model) -> Callable[[], keras.Model] | None:
        """What ``best.keras`` holds (None: the trained model itself)."""
        return None

    def results(
        self, folder: RunFolder, model: keras.Model, elapsed: float, verbose: bool = True
    ) -> dict[str, Any]:
        """``metrics.json``'s content: the test metrics of ``best.keras``.

        The trained model itself when the runner found it holds exactly ``best.keras``'s weights
        (``best_in_memory``), else the file reloaded.
        """
        best = self.best_in_memory
        if best is None:
            from kerasdl.methods import METHODS  # noqa: F401  (registers what a .keras names)

            best = keras.models.load_model(folder.best, compile=False)
        return {"split": self.eval_split, **self.final_metrics(best)}

    def classifier_metrics(self, kept: keras.Model) -> dict[str, float]:
        """Loss and the recipe's metrics of a classifier on the test split (val if none).

        Only that split's pipeline is built (as :func:`make_datasets` builds it): not the
        training one, whose augmentation (and ``pca_color``'s statistics) it does not use.
        """
        split = self.eval_split
        cache = self.bundle.cacheable(split, self.cfg.data.cache)
        compile_model(kept, self.cfg, steps_per_epoch=1)
        return evaluate_model(kept, eval_dataset(self.cfg, self.bundle, split, cache=cache))

    @property
    def eval_split(self) -> str:
        return "test" if "test" in self.bundle.splits else "val"

    def final_metrics(self, kept: keras.Model) -> dict[str, float]:
        """The test metrics of ``best.keras``."""
        return self.classifier_metrics(kept)


class MethodTask(SupervisedTask):
    """Train the recipe's model inside its ``method:`` (semi- or self-supervised).

    The method's kind (:mod:`kerasdl.methods.kinds`) supplies its datasets (the training set
    repeats; ``fit`` gets the epoch's steps), its monitor and its measurement; the run keeps the
    method's ``inference_model`` (the EMA classifier, or the pretrained backbone, also saved as
    ``backbone.keras`` by the kinds that pretrain one).
    """

    deterministic = False  # one data iterator across epochs: its read-ahead is not saved

    def __init__(self, cfg: RecipeConfig, bundle: DataBundle) -> None:
        super().__init__(cfg, bundle)
        from kerasdl.methods import method_entry

        self.entry, self.params = method_entry(cfg.method)

    def _auto_monitor(self, has_val: bool) -> str:
        with_val, without = self.entry.kind.monitor
        return with_val if has_val else without

    def logged(self) -> list[str] | None:
        return None  # the method logs its own names: checked when the first epoch ends

    def datasets(self, epoch: Any | None = None) -> dict[str, Any]:
        from kerasdl.methods.kinds import MethodData

        train, val = self.entry.kind.datasets(
            self.params, self.entry.views, MethodData.of_task(self)
        )
        out = {"train": train.repeat()}
        if val is not None:
            out["val"] = val
        return out

    def _method(self, classifier: keras.Model) -> keras.Model:
        kw = {k: v for k, v in self.cfg.method.items() if k != "name"}
        kw.setdefault("seed", self.cfg.run.seed)
        from kerasdl.methods import build_method

        return build_method(self.cfg.method["name"], classifier, self.bundle.num_classes, **kw)

    def build(self, steps_per_epoch: int, lr_factor: float) -> keras.Model:
        c = self.cfg
        model = self._method(self._build_classifier())
        if c.training.l1 or c.training.l2:  # MAE builds its own encoder: every kernel
            add_kernel_penalties(model, c.training.l1, c.training.l2)
        requested = c.training.execution_steps(c.distribute.strategy != "none")
        optimizer = _optimizer(c, steps_per_epoch, lr_factor)
        exclude_from_decay(optimizer, model, c.training.optimizer.decay_exclude)
        model.compile(
            optimizer=optimizer,
            steps_per_execution=method_execution_steps(requested, steps_per_epoch),
            jit_compile=c.training.jit_compile,
        )
        return model

    def fit_steps(self, steps_per_epoch: int) -> int | None:
        return steps_per_epoch

    def callbacks(self, model: keras.Model, run_dir: Path, sample: Any, monitor: str) -> list:
        extra = list(model.extra_callbacks(run_dir, sample))
        if self.entry.kind.keeps_backbone:
            extra.append(
                cb.BestCheckpoint(RunFolder(run_dir).backbone, monitor, None, self.keep(model))
            )
        return extra

    def keep(self, model: keras.Model) -> Callable[[], keras.Model] | None:
        return lambda: model.inference_model

    def initial_backbone(self) -> keras.Model:
        """The kept architecture at the run's initialisation (same seed): the baseline the
        pretraining is measured against."""
        keras.utils.set_random_seed(self.cfg.run.seed)
        return self._method(build_model(self.cfg, self.bundle)).inference_model

    def final_metrics(self, kept: keras.Model) -> dict[str, float]:
        return self.entry.kind.run_metrics(self, kept)


def task_class(cfg: Any) -> type:
    """The task of a recipe: the DARTS search for a search recipe, else the recipe's
    ``method:`` if it has one, else supervised training."""
    from kerasdl.nas.config import SearchRecipe

    if isinstance(cfg, SearchRecipe):
        from kerasdl.nas.task import SearchTask

        return SearchTask
    return MethodTask if cfg.method else SupervisedTask


def task_for(cfg: Any, bundle: DataBundle) -> Any:
    """The task of a recipe (:func:`task_class`), on its data."""
    return task_class(cfg)(cfg, bundle)
