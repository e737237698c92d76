"""A supervised training run from a validated recipe, built on Keras ``fit``.

The run folder (``<output_dir>/<name>/<timestamp>/``)::

    config.yaml       the resolved recipe (``kerasdl train config.yaml`` repeats the run)
    preprocess.json   image size, channels, standardization and class names (used by export)
    run_info.json     precision chosen, steps per epoch, resume history
    logs/             TensorBoard: train/ and validation/ loss and metrics per epoch,
                      learning rate per step, a few input images
    backup/           the last two full training states (resume after a crash)
    best.keras        the best model by ``training.monitor``
    history.csv       one row per epoch
    metrics.json      final test metrics of best.keras

Everything a user can get wrong (recipe, data, model name) is checked before the folder exists.
Started again with the same recipe, an unfinished run with the same resolved config is resumed
from its last backup.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.config import RecipeConfig
from kerasdl.data import DataBundle, load_data
from kerasdl.data.pipeline import batch_dataset, standardizer
from kerasdl.errors import UserError
from kerasdl.layers.normalization import sync_batch_norm
from kerasdl.models.base import HEAD
from kerasdl.registry import create_model
from kerasdl.runfolder import (  # noqa: F401  (trim_history: re-exported)
    RunFolder,
    RunLock,
    find_unfinished_run,
    new_run_dir,
    run_id,
    trim_history,
    write_json_atomic,
)
from kerasdl.training import callbacks as cb
from kerasdl.training import method_run as mr
from kerasdl.training.custom_loop import fit_distributed
from kerasdl.training.distribute import describe_distribution, make_strategy
from kerasdl.training.grad_tools import GradNormLogger
from kerasdl.training.initializers import apply_initializer
from kerasdl.training.optimizers import build_optimizer
from kerasdl.training.precision import resolve_precision
from kerasdl.training.regularizers import add_kernel_penalties
from kerasdl.training.schedules import build_schedule
from kerasdl.training.transfer import (
    load_matching_weights,
    prebuild_optimizer,
    setup_transfer,
    transfer_optimizer,
)


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    metrics: dict[str, float]
    resumed_from_epoch: int
    weights_fingerprint: float = 0.0  # sum of |w| over the trainable weights at the end


def build_model(cfg: RecipeConfig, bundle: DataBundle) -> keras.Model:
    """The recipe's model, with ``num_classes``/``input_shape`` from the data unless given."""
    kwargs = cfg.model.kwargs()
    kwargs.setdefault("num_classes", bundle.num_classes)
    kwargs.setdefault("input_shape", list(bundle.spec.input_shape))
    try:
        model = create_model(cfg.model.name, **kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"model ({cfg.model.name}): {err}") from None
    if cfg.model.init is not None:
        apply_initializer(model, cfg.model.init.name, cfg.model.init.mode, seed=cfg.run.seed)
    if cfg.model.init_from:
        skip = () if cfg.training.transfer.reuse_head else (HEAD,)
        print(load_matching_weights(model, cfg.model.init_from, skip=skip).text())
    if cfg.training.l1 or cfg.training.l2:
        add_kernel_penalties(model, cfg.training.l1, cfg.training.l2)
    return model


def compile_model(
    model: keras.Model, cfg: RecipeConfig, steps_per_epoch: int, lr_factor: float = 1.0
) -> None:
    """Compile with the recipe's optimizer, schedule, loss and metrics.

    ``lr_factor`` multiplies the recipe's learning rate (the distribution's scaling rule).
    """
    t = cfg.training
    base_lr = t.optimizer.learning_rate * lr_factor
    schedule = build_schedule(t.schedule, base_lr, steps_per_epoch, t.epochs)
    optimizer = build_optimizer(t.optimizer, schedule)
    optimizer = transfer_optimizer(optimizer, t.optimizer.backbone_lr_multiplier)
    metrics: list[Any] = []
    if "accuracy" in t.metrics:
        metrics.append(keras.metrics.CategoricalAccuracy(name="accuracy"))
    if "top5" in t.metrics:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=t.loss.label_smoothing
        ),
        metrics=metrics,
        steps_per_execution=t.execution_steps(cfg.distribute.strategy != "none"),
        jit_compile=t.jit_compile,
    )
    if t.transfer.strategy == "gradual_unfreeze":
        prebuild_optimizer(model)  # slots for the layers that unfreeze later


def make_datasets(
    cfg: RecipeConfig, bundle: DataBundle, epoch: Any | None = None
) -> dict[str, Any]:
    """Batched train/val/test datasets of the recipe.

    ``epoch`` (a variable holding the epoch about to run) makes the training order a function of
    the seed and the epoch, so that a resumed run sees the order an uninterrupted one would.
    """
    augment = None
    if cfg.data.augment:
        from kerasdl.data.augment import build_augment

        stats = None
        if any(s["name"] == "pca_color" for s in cfg.data.augment):
            from kerasdl.data.augment import compute_pca_stats

            stats = compute_pca_stats(np.stack([x for x, _ in bundle.splits["train"]]))
        augment = build_augment(
            cfg.data.augment, seed=cfg.run.seed, num_classes=bundle.num_classes, stats=stats
        )
    std = standardizer(cfg.data.mean, cfg.data.std)
    out = {}
    for split, ds in bundle.splits.items():
        training = split == "train"
        out[split] = batch_dataset(
            ds,
            cfg.training.batch_size,
            training=training,
            num_classes=bundle.num_classes,
            seed=cfg.run.seed,
            augment=augment if training else None,
            standardize=std,
            cache=cfg.data.cache,
            shuffle_buffer=cfg.data.shuffle_buffer,
            epoch=epoch if training else None,
        )
    return out


def evaluate_model(model: keras.Model, dataset: Any) -> dict[str, float]:
    """Loss and compiled metrics of ``model`` on a batched dataset."""
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


def train(
    cfg: RecipeConfig,
    *,
    fresh: bool = False,
    resume_dir: str | Path | None = None,
    verbose: int | str = "auto",
) -> RunResult:
    """Run a recipe: validate data and model, make or resume the run folder, fit, test.

    Args:
        cfg: a validated recipe (for ``resume_dir``, the run's own: see
            :func:`kerasdl.runfolder.resume_recipe`).
        fresh: never resume an unfinished run; start a new folder.
        resume_dir: resume this run folder explicitly.
        verbose: Keras ``fit`` verbosity.

    Returns:
        The run folder, the test metrics and the epoch training resumed from (0 for a new run).
    """
    d = cfg.distribute
    if cfg.run.deterministic:
        check_deterministic(cfg)
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(d.strategy, d.devices, d.logical_cpus)
    keras.utils.set_random_seed(cfg.run.seed)
    precision = resolve_precision(cfg.training.precision)
    keras.mixed_precision.set_global_policy(precision)
    bundle = load_data(cfg.data, cfg.run.seed)
    monitor = mr.default_monitor(cfg, "val" in bundle.splits)
    if "val" not in bundle.splits and monitor.startswith("val_"):
        raise UserError("training.monitor needs a validation split (data.val_split > 0)")
    if not cfg.method:  # a supervised run's logged names are known before it starts
        logged = ["loss", *cfg.training.metrics] + (
            ["grad_norm"] if cfg.training.log_grad_norm else []
        )
        known = logged + [f"val_{m}" for m in logged if m != "grad_norm"]
        if monitor not in known:
            raise UserError(
                f"training.monitor: {monitor!r} is not logged by this recipe. "
                f"Expected one of: auto, {', '.join(known)}."
            )
    dist = describe_distribution(
        strategy,
        d.strategy,
        cfg.training.batch_size,
        cfg.training.lr_scaling.rule,
        cfg.training.lr_scaling.base_batch_size,
    )
    mode = "min" if monitor.endswith("loss") else "max"
    state = cb.TrainingState(mode)
    rng: list = []  # random-generator states saved with the backups
    with tf.variable_creator_scope(_recording_into(rng)):
        datasets = make_datasets(cfg, bundle, epoch=state.epoch if cfg.run.deterministic else None)
    train_size = bundle.sizes.get("train") or int(
        bundle.splits["train"].reduce(0, lambda n, _: n + 1)
    )
    steps_per_epoch = max(math.ceil(train_size / cfg.training.batch_size), 1)
    with strategy.scope(), sync_batch_norm(d.sync_batchnorm):
        model = build_model(cfg, bundle)
        tr = cfg.training.transfer
        transfer_callbacks = setup_transfer(
            model, tr.strategy, unfreeze_every=tr.unfreeze_every, stage_prefixes=tr.stages or None
        )
        if cfg.method:  # semi-/self-supervised: train the method around the model
            classifier = model
            model = mr.build_method_model(cfg, classifier, bundle)
            if cfg.training.l1 or cfg.training.l2:  # MAE builds its own encoder: every kernel
                add_kernel_penalties(model, cfg.training.l1, cfg.training.l2)
            with tf.variable_creator_scope(_recording_into(rng)):
                datasets["train"], val = mr.method_datasets_for(cfg, bundle)
            datasets.pop("val", None)
            if val is not None:
                datasets["val"] = val
            _compile_method(model, cfg, steps_per_epoch, dist.lr_factor)
        else:
            compile_model(model, cfg, steps_per_epoch, dist.lr_factor)
    rng += cb.seed_generator_states(model)

    custom_loop = d.strategy == "multi_worker" or d.custom_loop
    chief = dist.is_chief
    folder, resuming, lock = _open_run_folder(cfg, fresh, resume_dir, chief)
    run_dir = folder.path
    try:
        initial_epoch = 0
        info: dict[str, Any] = {
            "precision": precision,
            "steps_per_epoch": steps_per_epoch,
            "epochs": cfg.training.epochs,
            "sizes": bundle.sizes,
            "resumes": [],
            "distribution": asdict(dist),
            "loop": "custom" if custom_loop else "keras_fit",
            "deterministic": cfg.run.deterministic,
        }
        if resuming:
            removed = folder.remove_partial_files() if chief else []
            if chief:
                removed += cb.remove_partial_files(folder.backup)
            if removed:
                print(f"Removed what the interrupted run left half written: {', '.join(removed)}")
            with strategy.scope():
                restored = cb.restore_backup(model, state, folder.backup, rng)
            info["resumes"] = folder.read_run_info().get("resumes", [])
            initial_epoch = int(state.epoch.numpy()) if restored is not None else 0
            info["resumes"].append(
                {
                    "epoch": initial_epoch,
                    "checkpoint": os.path.basename(restored) if restored else None,
                    "epochs": cfg.training.epochs,
                    "weights_fingerprint": cb.weights_fingerprint(model),
                }
            )
            where = f"epoch {initial_epoch} ({restored})" if restored else "the start (no backup)"
            print(f"Resuming {run_dir} from {where}")
        print(dist.describe())
        scratch = None
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not folder.config.exists():  # written once: a resume never rewrites the recipe
                cfg.dump_yaml(folder.config)
            if not folder.preprocess.exists():
                bundle.spec.save(folder.preprocess)
            write_json_atomic(folder.run_info, info)
            print(f"Run folder: {run_dir}  (precision {precision}, {steps_per_epoch} steps/epoch)")
            callbacks = _chief_callbacks(
                cfg, bundle, model, run_dir, state, monitor, initial_epoch, resuming, rng
            )
        else:  # other workers take part in the (collective) backup save, into a scratch folder
            scratch = Path(tempfile.mkdtemp(prefix="kerasdl-worker-"))
            callbacks = [cb.Backup(scratch / "backup", state, rng=rng)]
        callbacks = transfer_callbacks + callbacks
        if cfg.training.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor,
                    patience=cfg.training.early_stopping_patience,
                    mode=mode,
                )
            )
        if initial_epoch >= cfg.training.epochs:
            print(f"All {cfg.training.epochs} epochs were already trained; evaluating best.keras")
        elif custom_loop:
            fit_distributed(
                model,
                strategy,
                datasets["train"],
                epochs=cfg.training.epochs,
                steps_per_epoch=steps_per_epoch,
                initial_epoch=initial_epoch,
                validation_data=datasets.get("val"),
                callbacks=callbacks,
                verbose=bool(verbose),
            )
        else:
            if verbose:
                callbacks.append(cb.StepProgbar(steps_per_epoch))
            model.fit(
                datasets["train"],
                steps_per_epoch=steps_per_epoch if cfg.method else None,
                validation_data=datasets.get("val"),
                epochs=cfg.training.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=verbose,
            )
        fingerprint = float(
            sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.trainable_weights)
        )
        keras.mixed_precision.set_global_policy("float32")
        if not chief:
            shutil.rmtree(scratch, ignore_errors=True)
            return RunResult(run_dir, {}, initial_epoch, fingerprint)
        import kerasdl.methods  # noqa: F401  (registers method classes a checkpoint may name)

        best = keras.models.load_model(folder.best, compile=False)
        tests = make_datasets(cfg, bundle) if cfg.method else datasets
        eval_split = "test" if "test" in tests else "val"
        if cfg.method:
            metrics = mr.final_metrics(cfg, best, bundle, tests[eval_split])
        else:
            compile_model(best, cfg, steps_per_epoch)
            metrics = evaluate_model(best, tests[eval_split])
        info["final_weights_fingerprint"] = fingerprint
        write_json_atomic(folder.run_info, info)
        write_json_atomic(folder.metrics, {"split": eval_split, **metrics})
        return RunResult(run_dir, metrics, initial_epoch, fingerprint)
    finally:
        if lock is not None:
            lock.release()


def _open_run_folder(
    cfg: RecipeConfig, fresh: bool, resume_dir: str | Path | None, chief: bool
) -> tuple[RunFolder, bool, RunLock | None]:
    """The run folder to use, whether it is resumed, and (on the chief) its lock.

    A run folder is locked while a process trains in it, so that a second ``kerasdl train`` of
    the same recipe starts its own folder instead of resuming one that is still running.
    """
    fixed = run_id(cfg)
    if resume_dir is not None:
        folder = RunFolder(Path(resume_dir))
        if not folder.config.is_file():
            raise UserError(f"--resume: {folder.path} has no config.yaml; it is not a run folder")
        resuming = True
    elif fixed is not None:  # every worker derives the same folder
        folder = RunFolder(new_run_dir(cfg))
        resuming = folder.config.is_file() and not fresh
    else:
        found = None if fresh else find_unfinished_run(cfg)
        folder = RunFolder(found or new_run_dir(cfg))
        resuming = found is not None
    lock = None
    if chief:
        folder.path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(folder.path)
        if not lock.acquire():
            raise UserError(
                f"run folder {folder.path} is in use by another kerasdl process; wait for it to "
                "finish or stop it first"
            )
    return folder, resuming, lock


def _recording_into(variables: list) -> Any:
    """A ``tf.variable_creator_scope`` creator that appends every variable it makes to
    ``variables`` (used to find the data pipeline's random-generator states)."""

    def creator(next_creator: Any, **kwargs: Any) -> Any:
        var = next_creator(**kwargs)
        variables.append(var)
        return var

    return creator


def check_deterministic(cfg: RecipeConfig) -> None:
    """Reject what ``run.deterministic`` cannot make reproducible across a resume."""
    if cfg.method:
        raise UserError(
            "run.deterministic: supported for supervised recipes; a method: run keeps one data "
            "iterator across epochs, whose read-ahead position is not saved with the backup"
        )


def _compile_method(
    model: keras.Model, cfg: RecipeConfig, steps_per_epoch: int, lr_factor: float
) -> None:
    """Compile a method model: the recipe's optimizer and schedule (the method has its losses)."""
    t = cfg.training
    schedule = build_schedule(
        t.schedule, t.optimizer.learning_rate * lr_factor, steps_per_epoch, t.epochs
    )
    model.compile(
        optimizer=build_optimizer(t.optimizer, schedule),
        steps_per_execution=method_execution_steps(
            t.execution_steps(cfg.distribute.strategy != "none"), steps_per_epoch
        ),
        jit_compile=t.jit_compile,
    )


def method_execution_steps(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to ``requested``.

    Method runs train on a repeated dataset with ``steps_per_epoch``; Keras then rounds each epoch
    up to whole executions (79 steps with 16 per execution ran 80), which would shift the
    schedule and the step budget. A divisor keeps every epoch exact.
    """
    return max(
        d for d in range(1, max(min(requested, steps_per_epoch), 1) + 1) if not steps_per_epoch % d
    )


def _chief_callbacks(
    cfg: RecipeConfig,
    bundle: DataBundle,
    model: keras.Model,
    run_dir: Path,
    state: cb.TrainingState,
    monitor: str,
    initial_epoch: int,
    resuming: bool,
    rng: list | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks that write the run folder (only the chief runs them)."""
    log_dir = run_dir / "logs"
    sample = next(iter(bundle.splits["train"].batch(max(cfg.training.log_images, 8))))[0]
    if initial_epoch == 0 and cfg.training.log_images:
        cb.log_images(log_dir, np.asarray(sample)[: cfg.training.log_images])
    extra: list[keras.callbacks.Callback] = []
    if cfg.training.log_grad_norm:
        extra.append(GradNormLogger(log_dir))  # before CSVLogger: adds grad_norm to the logs
    if cfg.training.optimizer.ema:
        # Validation, best.keras and the backups see the EMA weights (swapped in at epoch end,
        # out at epoch begin). A backup therefore holds EMA weights in the model and the raw
        # ones in the optimizer's averages: a resumed run starts in the swapped state.
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        swap._ema_weights_in_model = resuming and initial_epoch > 0
        extra.append(swap)
    keep = None
    if cfg.method:
        extra += list(model.extra_callbacks(run_dir, np.asarray(sample)))
        keep = lambda: model.inference_model  # noqa: E731
        if mr.method_kind(cfg) != "semi":
            extra.append(cb.BestCheckpoint(run_dir / "backbone.keras", monitor, None, keep))
    if resuming:
        trim_history(run_dir / "history.csv", initial_epoch)
    return [
        cb.LearningRateLogger(log_dir),
        *extra,
        # the epoch's row before its backup: a crash in between must not lose the row
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        cb.BestCheckpoint(run_dir / "best.keras", monitor, state, keep),
        cb.Backup(run_dir / "backup", state, rng=rng),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch"),
    ]
