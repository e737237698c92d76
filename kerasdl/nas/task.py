"""The DARTS search as a task of the one runner (:mod:`kerasdl.training.runner`).

The runner owns the run folder (created, locked, resumed from ``backup/``), the loop and
``metrics.json``, as for any training run; this task owns what a search trains and writes: the
two halves of the training split, the search network and its bilevel optimizer, the alpha log,
and at the end ``genotype.json``, the cell drawings and ``alphas.json``. The search's folder::

    config.yaml, preprocess.json, run_info.json, backup/, history.csv   (as for any run)
    logs/                TensorBoard: losses and accuracies per epoch, the softmax of the alphas
                         per epoch (scalars, histograms and heat-map images), the genotype as text
    alphas_history.json  the softmax of the alphas after every epoch (kept across a resume)
    alphas.json          that history and the final logits
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

import csv
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl import io
from kerasdl.data import DataBundle
from kerasdl.data.pipeline import batch_dataset, standardizer
from kerasdl.errors import UserError
from kerasdl.layers.darts_ops import PRIMITIVES
from kerasdl.nas.callbacks import AlphaLogger, ProgressPrinter
from kerasdl.nas.config import SearchRecipe
from kerasdl.nas.plot import plot_cell
from kerasdl.nas.search import DartsSearch, default_weight_optimizer
from kerasdl.nas.search_model import SearchNetwork
from kerasdl.runfolder import RunFolder
from kerasdl.training.tasks import RunPlan


def split_train(ds: tf.data.Dataset, size: int, portion: float) -> tuple[Any, ...]:
    """The first ``portion`` of a split (trains the weights) and the rest (trains the alphas),
    with their sizes."""
    n = int(math.floor(size * portion))
    if n < 1 or size - n < 1:
        raise UserError(
            f"search.train_portion {portion} leaves an empty half of the {size} training examples"
        )
    return ds.take(n), ds.skip(n), n, size - n


class SearchTask:
    """A DARTS search (Liu et al. 2019): weights on one half of the training split, the
    architecture parameters on the other, the genotype derived from the final alphas.

    Args:
        cfg: the validated search recipe.
        bundle: its data.
    """

    deterministic = False  # the zipped halves' shuffles are not seeded by epoch

    def __init__(self, cfg: SearchRecipe, bundle: DataBundle) -> None:
        if cfg.data.augment:
            raise UserError("data.augment is not supported by kerasdl search; remove it")
        self.cfg = cfg
        self.bundle = bundle
        self.worker_callbacks: list[keras.callbacks.Callback] = []
        s = cfg.search
        self.train_half, self.arch_half, self.n_weights, self.n_arch = split_train(
            bundle.splits["train"], bundle.size("train"), s.train_portion
        )
        if min(self.n_weights, self.n_arch) // s.batch_size < 1:
            raise UserError(
                f"search.batch_size {s.batch_size} is larger than the "
                f"{min(self.n_weights, self.n_arch)} examples of a training half"
            )
        self.network: SearchNetwork | None = None
        self.alpha_logger: AlphaLogger | None = None

    @staticmethod
    def plan(cfg: SearchRecipe) -> RunPlan:
        """One device, float32, the search's epochs and batch; no best checkpoint (the
        genotype comes from the final alphas, as in the paper)."""
        return RunPlan(
            epochs=cfg.search.epochs,
            batch_size=cfg.search.batch_size,
            seed=cfg.run.seed,
            deterministic=cfg.run.deterministic,
            keep_best=False,
        )

    def monitor(self, has_val: bool) -> str:
        if not has_val:
            raise UserError("kerasdl search needs a validation split (data.val_split > 0)")
        return "val_accuracy"

    def steps_per_epoch(self) -> int:
        return min(self.n_weights, self.n_arch) // self.cfg.search.batch_size

    def datasets(self, epoch: Any | None = None) -> dict[str, Any]:
        """``train``: zipped batches of the two halves; ``val``: the validation split."""
        seed, bs = self.cfg.run.seed, self.cfg.search.batch_size
        common = dict(
            num_classes=self.bundle.num_classes,
            standardize=standardizer(self.cfg.data.mean, self.cfg.data.std),
        )
        halves = [
            batch_dataset(d, bs, training=True, seed=seed + k, drop_remainder=True, **common)
            for k, d in enumerate((self.train_half, self.arch_half))
        ]
        val = batch_dataset(self.bundle.splits["val"], bs, training=False, **common)
        return {"train": tf.data.Dataset.zip(halves[0], halves[1]), "val": val}

    def build(self, steps_per_epoch: int, lr_factor: float) -> keras.Model:
        """The compiled :class:`~kerasdl.nas.search.DartsSearch`, its optimizers built (so that
        a backup restores into them)."""
        s = self.cfg.search
        self.network = SearchNetwork(
            self.bundle.num_classes,
            self.bundle.spec.input_shape,
            s.init_channels,
            s.layers,
            s.nodes,
            s.concat,
            s.stem_multiplier,
            seed=self.cfg.run.seed,
        )
        search = DartsSearch(
            self.network,
            s.unrolled,
            s.weight_decay,
            s.grad_clip,
            s.arch_learning_rate,
            s.arch_beta_1,
            s.arch_beta_2,
            s.arch_weight_decay,
        )
        optimizer = default_weight_optimizer(
            steps_per_epoch * s.epochs, s.learning_rate, s.learning_rate_min, s.momentum
        )
        search.compile(optimizer=optimizer, jit_compile=s.jit_compile)
        search.build_optimizers()
        return search

    def fit_steps(self, steps_per_epoch: int) -> int | None:
        return None  # the zip of the two finite halves is one epoch

    def callbacks(self, model: keras.Model, run_dir: Path, sample: Any, monitor: str) -> list:
        """The alpha log (before the backup of the epoch, which the runner adds after)."""
        self.alpha_logger = AlphaLogger(
            self.network, RunFolder(run_dir).logs, Path(run_dir) / "alphas_history.json"
        )
        return [self.alpha_logger]

    def progress(self, steps_per_epoch: int) -> list[keras.callbacks.Callback]:
        """A line per epoch with the current normal cell."""
        s = self.cfg.search
        print(
            f"DARTS search: {s.layers} cells, C={s.init_channels}, {s.nodes} nodes, "
            f"{'second' if s.unrolled else 'first'}-order; {self.n_weights} examples train the "
            f"weights, {self.n_arch} the alphas; {steps_per_epoch} steps per epoch",
            flush=True,
        )
        return [ProgressPrinter(self.network, s.epochs)]

    def keep(self, model: keras.Model) -> None:
        return None

    @property
    def eval_split(self) -> str:
        return "val"

    def results(
        self, folder: RunFolder, model: keras.Model, elapsed: float, verbose: bool = True
    ) -> dict[str, Any]:
        """Write the genotype, the drawings and the alphas; return ``metrics.json``'s content."""
        network, run_dir = self.network, folder.path
        genotype = network.genotype()
        genotype.save(run_dir / "genotype.json")
        io.copy_file(run_dir / "genotype.json", run_dir.parent / "genotype.json")
        plot_cell(genotype, "normal", run_dir / "normal.png")
        plot_cell(genotype, "reduce", run_dir / "reduce.png")
        io.write_json(
            run_dir / "alphas.json",
            {
                "primitives": list(PRIMITIVES),
                "final_logits": {
                    "normal": np.asarray(network.alphas_normal).tolist(),
                    "reduce": np.asarray(network.alphas_reduce).tolist(),
                },
                "softmax_per_epoch": self.alpha_logger.history if self.alpha_logger else [],
            },
        )
        last: dict[str, float] = {}
        if folder.history.is_file():  # the last epoch's row (also after a resume past the end)
            with folder.history.open() as f:
                rows = list(csv.DictReader(f))
            if rows:
                last = {k: float(v) for k, v in rows[-1].items() if k != "epoch"}
        if verbose:
            acc = last.get("val_accuracy", 0)
            print(f"search finished in {elapsed:.0f}s; val_accuracy {acc:.4f}")
            latest = run_dir.parent / "genotype.json"
            print(f"genotype: {run_dir / 'genotype.json'} (also {latest})")
            print(f"cells: {run_dir / 'normal.png'}, {run_dir / 'reduce.png'}", flush=True)
        return {**last, "search_seconds": round(elapsed, 1), "genotype": genotype.to_dict()}
