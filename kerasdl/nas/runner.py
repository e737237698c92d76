"""A DARTS search run from a recipe: data halves, bilevel fit, logging, genotype and drawings.

The run folder (``<run.output_dir>/<run.name>/<timestamp>/``)::

    config.yaml          the resolved search recipe (``kerasdl search config.yaml`` repeats it)
    logs/                TensorBoard: losses and accuracies per epoch, the softmax of the alphas
                         per epoch (scalars, histograms and heat-map images), the genotype as text
    history.csv          one row per epoch
    alphas.json          the softmax of the alphas after every epoch, and the final logits
    genotype.json        the derived architecture (``model: {name: darts_net, genotype: ...}``)
    normal.png, reduce.png   drawings of the two cells
    metrics.json         final validation accuracy of the search network, time, genotype

``genotype.json`` is also copied to ``<run.output_dir>/<run.name>/genotype.json`` (the latest
search of that recipe), which the retrain recipe can point at.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
    (``cnn/train_search.py`` in https://github.com/quark0/darts).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl import io
from kerasdl.data import load_data
from kerasdl.data.pipeline import batch_dataset, standardizer
from kerasdl.errors import UserError
from kerasdl.layers.darts_ops import PRIMITIVES
from kerasdl.nas.config import SearchRecipe
from kerasdl.nas.genotype import Genotype
from kerasdl.nas.plot import figure_to_png, heatmap_figure, plot_cell
from kerasdl.nas.search import DartsSearch, default_weight_optimizer
from kerasdl.nas.search_model import SearchNetwork
from kerasdl.runfolder import (
    RunFolder,
    RunLock,
    find_unfinished_run,
    new_run_dir,
    trim_history,
    write_json_atomic,
)
from kerasdl.training.callbacks import (
    Backup,
    TrainingState,
    remove_partial_files,
    restore_backup,
    seed_generator_states,
)


class AlphaLogger(keras.callbacks.Callback):
    """Log the softmax of the alphas after every epoch to TensorBoard and keep a history.

    Per cell type: one scalar per (edge, operation) under ``alphas_<cell>/<j>-><i>/<op>``, a
    histogram per operation, a heat-map image, and the derived genotype as text.

    Args:
        network: the search network.
        log_dir: TensorBoard folder (a sub-folder ``alphas`` is written).
        history_path: a JSON file that keeps the history across a resume (None: memory only).
    """

    def __init__(
        self, network: SearchNetwork, log_dir: str | Path, history_path: str | Path | None = None
    ) -> None:
        super().__init__()
        self.network = network
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "alphas"))
        self.history_path = Path(history_path) if history_path else None
        self.history: list[dict[str, list[list[float]]]] = []
        if self.history_path is not None and self.history_path.is_file():
            self.history = json.loads(self.history_path.read_text())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        weights = self.network.arch_weights()
        del self.history[epoch:]  # a resumed search redoes the epochs after its backup
        self.history.append({k: v.tolist() for k, v in weights.items()})
        if self.history_path is not None:
            write_json_atomic(self.history_path, self.history)
        steps = self.network.steps
        edges = [(j, i + 2) for i in range(steps) for j in range(i + 2)]
        with self.writer.as_default(step=epoch + 1):
            for kind, w in weights.items():
                for e, (j, i) in enumerate(edges):
                    for k, op in enumerate(PRIMITIVES):
                        tf.summary.scalar(f"alphas_{kind}/{j}->{i}/{op}", float(w[e, k]))
                for k, op in enumerate(PRIMITIVES):
                    tf.summary.histogram(f"alphas_{kind}_hist/{op}", w[:, k])
                png = figure_to_png(heatmap_figure(w, f"{kind} cell, epoch {epoch + 1}", steps))
                tf.summary.image(f"alphas_{kind}", tf.image.decode_png(png)[None])
            tf.summary.text("genotype", json.dumps(self.network.genotype().to_dict()))
        self.writer.flush()


class ProgressPrinter(keras.callbacks.Callback):
    """One line per epoch: losses, accuracies, elapsed time, the current normal cell."""

    def __init__(self, network: SearchNetwork, epochs: int) -> None:
        super().__init__()
        self.network, self.epochs, self.start = network, epochs, time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, (int, float))]
        print(
            f"epoch {epoch + 1}/{self.epochs} ({time.time() - self.start:.0f}s): "
            + ", ".join(parts)
        )
        normal = ", ".join(f"{op}<-{i}" for op, i in self.network.genotype().normal)
        print(f"  normal cell: {normal}", flush=True)


def split_train(ds: tf.data.Dataset, size: int, portion: float) -> tuple[tf.data.Dataset, ...]:
    """The first ``portion`` of a split (trains the weights) and the rest (trains the alphas)."""
    n = int(math.floor(size * portion))
    if n < 1 or size - n < 1:
        raise UserError(
            f"search.train_portion {portion} leaves an empty half of the {size} training examples"
        )
    return ds.take(n), ds.skip(n), n, size - n


def run_search(
    recipe: SearchRecipe,
    verbose: int = 1,
    *,
    fresh: bool = False,
    resume_dir: str | Path | None = None,
) -> tuple[Path, Genotype]:
    """Run a DARTS search and write its run folder; returns the folder and the genotype.

    Like a training run, a search saves its whole state (network weights, alphas, both
    optimizers, the epoch) to ``backup/`` after every epoch; started again with the same recipe
    (or with ``resume_dir``), an unfinished search continues from its last backup.

    Args:
        recipe: the validated search recipe (for ``resume_dir``, the run's own).
        verbose: print one line per epoch.
        fresh: never resume an unfinished search.
        resume_dir: continue this run folder.
    """
    s = recipe.search
    if recipe.data.augment:
        raise UserError("data.augment is not supported by kerasdl search; remove it")
    keras.utils.set_random_seed(recipe.run.seed)
    bundle = load_data(recipe.data, seed=recipe.run.seed)
    train_ds, arch_ds, n_w, n_a = split_train(
        bundle.splits["train"], bundle.sizes["train"], s.train_portion
    )
    common = dict(
        num_classes=bundle.num_classes,
        standardize=standardizer(recipe.data.mean, recipe.data.std),
    )
    batches = [
        batch_dataset(
            d, s.batch_size, training=True, seed=recipe.run.seed + k, drop_remainder=True, **common
        )
        for k, d in enumerate((train_ds, arch_ds))
    ]
    search_data = tf.data.Dataset.zip(batches[0], batches[1])
    val = batch_dataset(bundle.splits["val"], s.batch_size, training=False, **common)
    steps = min(n_w, n_a) // s.batch_size
    if steps < 1:
        raise UserError(
            f"search.batch_size {s.batch_size} is larger than the {min(n_w, n_a)} examples of a "
            "training half"
        )

    network = SearchNetwork(
        bundle.num_classes,
        bundle.spec.input_shape,
        s.init_channels,
        s.layers,
        s.nodes,
        s.concat,
        s.stem_multiplier,
        seed=recipe.run.seed,
    )
    search = DartsSearch(
        network,
        s.unrolled,
        s.weight_decay,
        s.grad_clip,
        s.arch_learning_rate,
        s.arch_beta_1,
        s.arch_beta_2,
        s.arch_weight_decay,
    )
    optimizer = default_weight_optimizer(
        steps * s.epochs, s.learning_rate, s.learning_rate_min, s.momentum
    )
    search.compile(optimizer=optimizer, jit_compile=s.jit_compile)

    if resume_dir is not None:
        found: Path | None = Path(resume_dir)
    else:
        found = None if fresh else find_unfinished_run(recipe)
    folder = RunFolder(found or new_run_dir(recipe))
    run_dir = folder.path
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    if not lock.acquire():
        raise UserError(f"run folder {run_dir} is in use by another kerasdl process")
    try:
        state = TrainingState("max")
        rng = seed_generator_states(search)
        initial_epoch = 0
        if found is not None:
            removed = folder.remove_partial_files() + remove_partial_files(folder.backup)
            if removed:
                print(f"Removed what the interrupted search left half written: {removed}")
            search._ensure_optimizers()
            restored = restore_backup(search, state, folder.backup, rng)
            initial_epoch = int(state.epoch.numpy()) if restored else 0
            trim_history(folder.history, initial_epoch)
            print(f"Resuming {run_dir} from epoch {initial_epoch}", flush=True)
        if not folder.config.exists():
            recipe.dump_yaml(folder.config)
        if not folder.preprocess.exists():
            bundle.spec.save(folder.preprocess)
        alpha_logger = AlphaLogger(network, folder.logs, run_dir / "alphas_history.json")
        callbacks: list[keras.callbacks.Callback] = [
            keras.callbacks.TensorBoard(str(folder.logs), write_graph=False),
            keras.callbacks.CSVLogger(str(folder.history), append=found is not None),
            alpha_logger,
            Backup(folder.backup, state, rng=rng),  # after the row and the alphas of the epoch
        ]
        if verbose:
            callbacks.append(ProgressPrinter(network, s.epochs))
            print(
                f"DARTS search: {s.layers} cells, C={s.init_channels}, {s.nodes} nodes, "
                f"{'second' if s.unrolled else 'first'}-order; {n_w} examples train the weights, "
                f"{n_a} the alphas; {steps} steps per epoch. Run folder: {run_dir}",
                flush=True,
            )
        start = time.time()
        history = search.fit(
            search_data,
            validation_data=val,
            epochs=s.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )
        elapsed = time.time() - start
        return _finish(recipe, network, folder, alpha_logger, history, elapsed, verbose)
    finally:
        lock.release()


def _finish(
    recipe: SearchRecipe,
    network: SearchNetwork,
    folder: RunFolder,
    alpha_logger: AlphaLogger,
    history: Any,
    elapsed: float,
    verbose: int,
) -> tuple[Path, Genotype]:
    """Write the search's results: genotype, drawings, alphas and metrics."""
    run_dir = folder.path

    genotype = network.genotype()
    genotype.save(run_dir / "genotype.json")
    io.copy_file(run_dir / "genotype.json", run_dir.parent / "genotype.json")
    plot_cell(genotype, "normal", run_dir / "normal.png")
    plot_cell(genotype, "reduce", run_dir / "reduce.png")
    write_json_atomic(
        run_dir / "alphas.json",
        {
            "primitives": list(PRIMITIVES),
            "final_logits": {
                "normal": np.asarray(network.alphas_normal).tolist(),
                "reduce": np.asarray(network.alphas_reduce).tolist(),
            },
            "softmax_per_epoch": alpha_logger.history,
        },
    )
    last = {k: float(v[-1]) for k, v in history.history.items() if v}
    if not last and folder.history.is_file():  # resumed after the last epoch: its row
        import csv

        with folder.history.open() as f:
            rows = list(csv.DictReader(f))
        last = {k: float(v) for k, v in rows[-1].items() if k != "epoch"} if rows else {}
    write_json_atomic(
        run_dir / "metrics.json",
        {**last, "search_seconds": round(elapsed, 1), "genotype": genotype.to_dict()},
    )
    if verbose:
        print(f"search finished in {elapsed:.0f}s; val_accuracy {last.get('val_accuracy', 0):.4f}")
        print(f"genotype: {run_dir / 'genotype.json'} (also {run_dir.parent / 'genotype.json'})")
        print(f"cells: {run_dir / 'normal.png'}, {run_dir / 'reduce.png'}", flush=True)
    return run_dir, genotype
