"""The runner: any task (:mod:`kerasdl.training.tasks`) from a validated recipe to a run folder.

The runner owns what every kind of run shares: the distribution strategy and precision, the run
folder (:class:`kerasdl.runfolder.RunFolder`: created, locked, resumed), the backups and the
callbacks that write the folder, the training loop (Keras ``fit``, or the custom loop under
multi-worker) and the final ``metrics.json``. The task owns what is trained and how it is measured;
the runner never asks which task it runs. The run folder (``<output_dir>/<name>/<timestamp>/``)::

    config.yaml       the resolved recipe (``kerasdl train config.yaml`` repeats the run)
    preprocess.json   image size, channels, standardization and class names (used by export)
    run_info.json     precision chosen, steps per epoch, resume history, final fingerprint
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

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.config import RecipeConfig
from kerasdl.data import load_data
from kerasdl.data.datasets import make_datasets  # noqa: F401  (re-exported)
from kerasdl.errors import UserError
from kerasdl.io import check_output_dir
from kerasdl.layers.normalization import configure_batch_norm
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
from kerasdl.training.auto import AutoChoice, describe, onednn_choice, resolve_run
from kerasdl.training.custom_loop import fit_distributed
from kerasdl.training.distribute import describe_distribution, make_strategy
from kerasdl.training.grad_tools import GradNormLogger
from kerasdl.training.single_trace import create_optimizer_variables
from kerasdl.training.tasks import (  # noqa: F401  (the supervised pieces: re-exported)
    RunPlan,
    SupervisedTask,
    build_model,
    compile_model,
    evaluate_model,
    method_execution_steps,
    task_class,
    task_for,
)


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    metrics: dict[str, float]
    resumed_from_epoch: int
    weights_fingerprint: float = 0.0  # sum of |w| over the trainable weights at the end


def train(
    cfg: Any,
    *,
    fresh: bool = False,
    resume_dir: str | Path | None = None,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Run a recipe: validate data and model, make or resume the run folder, fit, measure.

    Args:
        cfg: a validated recipe (:class:`~kerasdl.config.RecipeConfig`, or a
            :class:`~kerasdl.nas.config.SearchRecipe` for a DARTS search); for ``resume_dir``,
            the run's own (see :func:`kerasdl.runfolder.resume_recipe`).
        fresh: never resume an unfinished run; start a new folder.
        resume_dir: resume this run folder explicitly.
        verbose: Keras ``fit`` verbosity.
        callbacks: extra Keras callbacks, run by every worker after the run's own (e.g. the
            pruning callback of ``kerasdl tune``, :mod:`kerasdl.tune.tuner`); one that sets
            ``model.stop_training`` ends the run after that epoch, which is then measured and
            finished as usual.

    Returns:
        The run folder, the final metrics and the epoch training resumed from (0 for a new run).
    """
    extra_callbacks = callbacks  # (the name `callbacks` is the run's own list below)
    if resume_dir is None:  # a file where the runs go fails now, not after the model is built
        check_output_dir(cfg.run.output_dir, "run.output_dir")
    task_cls = task_class(cfg)
    plan: RunPlan = task_cls.plan(cfg)
    d = plan.distribute
    if plan.deterministic:
        check_deterministic(task_cls)
    # first: TensorFlow sizes its thread pools when it starts (kerasdl.training.auto)
    precision, auto_choices = resolve_run(plan.precision, plan.inter_op_threads, plan.model_name)
    strategy = make_strategy(d.strategy, d.devices, d.logical_cpus)
    keras.utils.set_random_seed(plan.seed)
    keras.mixed_precision.set_global_policy(precision)
    bundle = load_data(cfg.data, plan.seed)
    task = task_cls(cfg, bundle)
    monitor = task.monitor("val" in bundle.splits)
    dist = describe_distribution(
        strategy, d.strategy, plan.batch_size, plan.lr_scaling, plan.base_batch_size
    )
    mode = "min" if monitor.endswith("loss") else "max"
    state = cb.TrainingState(mode)
    rng: list = []  # random-generator states saved with the backups
    with tf.variable_creator_scope(_recording_into(rng)):
        datasets = task.datasets(epoch=state.epoch if plan.deterministic else None)
    steps_per_epoch = task.steps_per_epoch()
    with strategy.scope():
        model = task.build(steps_per_epoch, dist.lr_factor)
        if d.sync_batchnorm:  # batch statistics over the global batch of all replicas
            configure_batch_norm(model, synchronized=True)
        create_optimizer_variables(model)  # one trace of the train step, not two
    remat = apply_remat(cfg, model)
    training = getattr(cfg, "training", None)
    if training is not None and training.steps_per_execution == "auto":
        spe = getattr(model, "steps_per_execution", 1)
        why = "multi-step loop" if spe > 1 else "per-step logging or tf.distribute"
        auto_choices.append(AutoChoice("steps_per_execution", spe, why))
    auto_choices.append(onednn_choice())
    rng += cb.seed_generator_states(model)

    custom_loop = d.strategy == "multi_worker" or d.custom_loop
    chief = dist.is_chief
    folder, resuming, lock = _open_run_folder(cfg, fresh, resume_dir, chief)
    run_dir = folder.path
    scratch: Path | None = None  # a non-chief worker's backup folder, removed however it ends
    try:
        initial_epoch = 0
        info: dict[str, Any] = {
            "precision": precision,
            "steps_per_epoch": steps_per_epoch,
            "epochs": plan.epochs,
            "sizes": bundle.sizes,
            "resumes": [],
            "distribution": asdict(dist),
            "loop": "custom" if custom_loop else "keras_fit",
            "deterministic": plan.deterministic,
            "remat": remat,
            "auto": {c.setting: {"value": c.value, "why": c.why} for c in auto_choices},
            # the pool in effect, explicit or auto (0: TensorFlow's default, one per core)
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
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
                    "epochs": plan.epochs,
                    "weights_fingerprint": cb.weights_fingerprint(model),
                }
            )
            where = f"epoch {initial_epoch} ({restored})" if restored else "the start (no backup)"
            print(f"Resuming {run_dir} from {where}")
        print(dist.describe())
        if auto_choices and chief:
            print(describe(auto_choices))
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not folder.config.exists():  # written once: a resume never rewrites the recipe
                cfg.dump_yaml(folder.config)
            if not folder.preprocess.exists():
                bundle.spec.save(folder.preprocess)
            write_json_atomic(folder.run_info, info)
            print(f"Run folder: {run_dir}  (precision {precision}, {steps_per_epoch} steps/epoch)")
            callbacks = _chief_callbacks(
                task, plan, model, run_dir, state, monitor, initial_epoch, resuming, rng
            )
        else:  # other workers take part in the (collective) backup save, into a scratch folder
            scratch = Path(tempfile.mkdtemp(prefix="kerasdl-worker-"))
            callbacks = [cb.Backup(scratch / "backup", state, rng=rng)]
        callbacks = task.worker_callbacks + callbacks + list(extra_callbacks)
        if plan.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=plan.early_stopping_patience, mode=mode
                )
            )
        start = time.monotonic()
        if initial_epoch >= plan.epochs:
            print(f"All {plan.epochs} epochs were already trained")
        elif custom_loop:
            fit_distributed(
                model,
                strategy,
                datasets["train"],
                epochs=plan.epochs,
                steps_per_epoch=steps_per_epoch,
                initial_epoch=initial_epoch,
                validation_data=datasets.get("val"),
                callbacks=callbacks,
                verbose=bool(verbose),
            )
        else:
            progress = task.progress(steps_per_epoch) if verbose else []
            # Keras adds its own bar when verbose and no ProgbarLogger is given: not twice.
            bar = any(isinstance(c, keras.callbacks.ProgbarLogger) for c in progress)
            model.fit(
                datasets["train"],
                steps_per_epoch=task.fit_steps(steps_per_epoch),
                validation_data=datasets.get("val"),
                epochs=plan.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks + progress,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=verbose if bar else 0,
            )
        elapsed = time.monotonic() - start
        fingerprint = float(
            sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.trainable_weights)
        )
        keras.mixed_precision.set_global_policy("float32")
        if not chief:
            return RunResult(run_dir, {}, initial_epoch, fingerprint)
        task.best_in_memory = _best_in_memory(
            callbacks,
            model,
            single=d.strategy == "none" and not custom_loop and not remat,
            precision=precision,
            sync_batchnorm=d.sync_batchnorm,
        )
        results = task.results(folder, model, elapsed, bool(verbose))
        info["final_weights_fingerprint"] = fingerprint
        write_json_atomic(folder.run_info, info)
        write_json_atomic(folder.metrics, results)  # last: it marks the run finished
        metrics = {k: v for k, v in results.items() if k != "split"}
        return RunResult(run_dir, metrics, initial_epoch, fingerprint)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if lock is not None:
            lock.release()


def apply_remat(cfg: Any, model: keras.Model) -> dict[str, list[str]] | None:
    """Rematerialise the model's blocks when the recipe asks (``training.remat``); says so.

    Keras's own ``keras.RematScope`` fails on the TensorFlow backend for layers called with
    ``training=`` and would update batch-norm statistics twice; :mod:`kerasdl.layers.remat`
    explains and does it faithfully. Returns what was rematerialised (None when off).
    """
    if not getattr(getattr(cfg, "training", None), "remat", False):
        return None
    from kerasdl.layers.remat import remat_blocks

    done = remat_blocks(model)
    kept = done["skipped"]
    print(
        f"Rematerialisation: {len(done['blocks'])} blocks recompute their activations in the "
        "backward pass" + (f"; {len(kept)} kept as they are (e.g. {kept[0]})" if kept else "")
    )
    return done


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


def check_deterministic(task_cls: type) -> None:
    """Switch on what ``run.deterministic`` needs, or reject a task it cannot make reproducible
    across a resume."""
    if not task_cls.deterministic:
        raise UserError(
            "run.deterministic: supported for supervised recipes; a method: run or a search "
            "keeps one data iterator across epochs, whose read-ahead position is not saved with "
            "the backup"
        )
    tf.config.experimental.enable_op_determinism()


def _best_in_memory(
    callbacks: list, model: keras.Model, single: bool, precision: str, sync_batchnorm: bool
) -> keras.Model | None:
    """The trained model when it holds exactly the weights ``best.keras`` holds, else None.

    ``metrics.json`` then evaluates it instead of reloading ``best.keras`` (the same
    architecture and, by :meth:`BestCheckpoint.holds`, the same bytes of every weight). Only on
    one device, in float32, with Keras's ``fit`` and no rematerialisation or synchronised batch
    norm: the cases where the trained model and a fresh load of the file are the same graph.
    """
    if not single or sync_batchnorm or precision != "float32":
        return None
    best = next((c for c in callbacks if isinstance(c, cb.BestCheckpoint)), None)
    return model if best is not None and best.holds(model) else None


def _chief_callbacks(
    task: Any,
    plan: RunPlan,
    model: keras.Model,
    run_dir: Path,
    state: cb.TrainingState,
    monitor: str,
    initial_epoch: int,
    resuming: bool,
    rng: list | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks that write the run folder (only the chief runs them)."""
    folder = RunFolder(run_dir)
    sample = next(iter(task.bundle.splits["train"].batch(max(plan.log_images, 8))))[0]
    if initial_epoch == 0 and plan.log_images:
        cb.log_images(folder.logs, np.asarray(sample)[: plan.log_images])
    extra: list[keras.callbacks.Callback] = []
    if plan.log_grad_norm:
        extra.append(GradNormLogger(folder.logs))  # before CSVLogger: adds grad_norm to the logs
    if plan.ema:
        # Validation, best.keras and the backups see the EMA weights (swapped in at epoch end,
        # out at epoch begin). A backup therefore holds EMA weights in the model and the raw
        # ones in the optimizer's averages: a resumed run starts in the swapped state.
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        swap._ema_weights_in_model = resuming and initial_epoch > 0
        extra.append(swap)
    extra += task.callbacks(model, run_dir, np.asarray(sample), monitor)
    if resuming:
        trim_history(folder.history, initial_epoch)
    best = [cb.BestCheckpoint(folder.best, monitor, state, task.keep(model))]
    return [
        cb.LearningRateLogger(folder.logs),
        *extra,
        # the epoch's row before its backup: a crash in between must not lose the row
        keras.callbacks.CSVLogger(str(folder.history), append=resuming),
        *(best if plan.keep_best else []),
        cb.Backup(folder.backup, state, rng=rng),
        keras.callbacks.TensorBoard(str(folder.logs), write_graph=False, update_freq="epoch"),
    ]
