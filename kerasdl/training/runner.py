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

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml

from kerasdl.config import RecipeConfig
from kerasdl.data import DataBundle, load_data
from kerasdl.data.pipeline import batch_dataset, standardizer
from kerasdl.errors import UserError
from kerasdl.layers.normalization import sync_batch_norm
from kerasdl.models.base import HEAD
from kerasdl.registry import create_model
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


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def trim_history(path: str | Path, initial_epoch: int) -> None:
    """Drop the rows of ``history.csv`` from ``initial_epoch`` on (a resumed run redoes them).

    The row of an epoch is written before its backup (a crash between the two must not lose
    the row), so a crash after the row and before the backup leaves a row the resumed run writes
    again.
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def before(line: str) -> bool:
        head = line.split(",", 1)[0].strip()
        return not head.isdigit() or int(head) < initial_epoch  # keep what is not a row

    kept = lines[:1] + [ln for ln in lines[1:] if before(ln)]
    if kept != lines:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def find_unfinished_run(cfg: RecipeConfig) -> Path | None:
    """The newest run folder of this recipe's name that has a backup, no metrics.json and the
    same resolved config."""
    parent = Path(cfg.run.output_dir) / cfg.run.name
    if not parent.is_dir():
        return None
    wanted = cfg.to_dict()
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        if (run_dir / "metrics.json").exists() or not (run_dir / "backup").is_dir():
            continue
        try:
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue
        if saved == wanted:
            return run_dir
    return None


def run_id(cfg: RecipeConfig) -> str | None:
    """The fixed folder name of a run: ``run.id``, or for a multi-worker run (whose workers must
    agree on the folder) a hash of the resolved recipe; None means a timestamp."""
    if cfg.run.id:
        return cfg.run.id
    if cfg.distribute.strategy == "multi_worker":
        text = json.dumps(cfg.to_dict(), sort_keys=True)
        return "mw-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return None


def new_run_dir(cfg: RecipeConfig) -> Path:
    """A fresh ``<output_dir>/<name>/<timestamp or id>`` path (not created)."""
    parent = Path(cfg.run.output_dir) / cfg.run.name
    fixed = run_id(cfg)
    if fixed is not None:
        if (parent / fixed / "metrics.json").exists():
            raise UserError(
                f"run folder {parent / fixed} already holds a finished run; "
                "set another run.id (or remove the folder)"
            )
        return parent / fixed
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = parent / stamp
    n = 1
    while run_dir.exists():
        run_dir = parent / f"{stamp}-{n}"
        n += 1
    return run_dir


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


def make_datasets(cfg: RecipeConfig, bundle: DataBundle) -> dict[str, Any]:
    """Batched train/val/test datasets of the recipe."""
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
        cfg: a validated recipe.
        fresh: never resume an unfinished run; start a new folder.
        resume_dir: resume this run folder explicitly.
        verbose: Keras ``fit`` verbosity.

    Returns:
        The run folder, the test metrics and the epoch training resumed from (0 for a new run).
    """
    d = cfg.distribute
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
    datasets = make_datasets(cfg, bundle)
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
            datasets["train"], val = mr.method_datasets_for(cfg, bundle)
            datasets.pop("val", None)
            if val is not None:
                datasets["val"] = val
            _compile_method(model, cfg, steps_per_epoch, dist.lr_factor)
        else:
            compile_model(model, cfg, steps_per_epoch, dist.lr_factor)

    custom_loop = d.strategy == "multi_worker" or d.custom_loop
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "backup").is_dir():
            raise UserError(f"--resume: {run_dir} has no backup/ folder to resume from")
    else:
        run_dir = None if fresh else find_unfinished_run(cfg)
    resuming = run_dir is not None
    run_dir = run_dir or new_run_dir(cfg)
    chief = dist.is_chief

    mode = "min" if monitor.endswith("loss") else "max"
    state = cb.TrainingState(mode)
    initial_epoch = 0
    info: dict[str, Any] = {
        "precision": precision,
        "steps_per_epoch": steps_per_epoch,
        "sizes": bundle.sizes,
        "resumes": [],
        "distribution": asdict(dist),
        "loop": "custom" if custom_loop else "keras_fit",
    }
    if resuming:
        with strategy.scope():
            restored = cb.restore_backup(model, state, run_dir / "backup")
        if restored is not None:
            initial_epoch = int(state.epoch.numpy())
            old = run_dir / "run_info.json"
            if old.exists():
                info["resumes"] = json.loads(old.read_text()).get("resumes", [])
            info["resumes"].append(
                {
                    "epoch": initial_epoch,
                    "checkpoint": os.path.basename(restored),
                    "weights_fingerprint": cb.weights_fingerprint(model),
                }
            )
            print(f"Resuming {run_dir} from epoch {initial_epoch} ({restored})")
    print(dist.describe())
    scratch = None
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump_yaml(run_dir / "config.yaml")
        bundle.spec.save(run_dir / "preprocess.json")
        write_json_atomic(run_dir / "run_info.json", info)
        print(f"Run folder: {run_dir}  (precision {precision}, {steps_per_epoch} steps/epoch)")
        callbacks = _chief_callbacks(
            cfg, bundle, model, run_dir, state, monitor, initial_epoch, resuming
        )
    else:  # other workers take part in the (collective) backup save, into a scratch folder
        scratch = Path(tempfile.mkdtemp(prefix="kerasdl-worker-"))
        callbacks = [cb.Backup(scratch / "backup", state)]
    callbacks = transfer_callbacks + callbacks
    if cfg.training.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=cfg.training.early_stopping_patience,
                mode=mode,
            )
        )
    if initial_epoch < cfg.training.epochs:
        if custom_loop:
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
    trainable = float(sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.trainable_weights))
    print(f"Final trainable-weights fingerprint: {trainable!r}")
    keras.mixed_precision.set_global_policy("float32")
    if not chief:
        shutil.rmtree(scratch, ignore_errors=True)
        return RunResult(run_dir, {}, initial_epoch)
    import kerasdl.methods  # noqa: F401  (registers method classes a checkpoint may name)

    best = keras.models.load_model(run_dir / "best.keras", compile=False)
    tests = make_datasets(cfg, bundle) if cfg.method else datasets
    eval_split = "test" if "test" in tests else "val"
    if cfg.method:
        metrics = mr.final_metrics(cfg, best, bundle, tests[eval_split])
    else:
        compile_model(best, cfg, steps_per_epoch)
        metrics = evaluate_model(best, tests[eval_split])
    write_json_atomic(run_dir / "metrics.json", {"split": eval_split, **metrics})
    return RunResult(run_dir, metrics, initial_epoch)


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
        cb.Backup(run_dir / "backup", state),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch"),
    ]
