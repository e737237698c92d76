"""Callbacks of the DARTS search: the alphas logged per epoch, and a line of progress per epoch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from kerasdl.layers.darts_ops import PRIMITIVES
from kerasdl.nas.plot import figure_to_png, heatmap_figure
from kerasdl.nas.search_model import SearchNetwork
from kerasdl.runfolder import write_json_atomic


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
