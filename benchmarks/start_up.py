"""Start-up time: a user's first ``fit``, and the DARTS search's build (benchmarks/README.md).

Each measurement runs in this process; run the two sides in fresh processes, alternating::

    python benchmarks/start_up.py fit --keras resnet18 32     # Keras alone: two traces
    python benchmarks/start_up.py fit resnet18 32             # kerasdl's TracesOnce: one
    python benchmarks/start_up.py darts --symbolic            # the old build, by a symbolic call
    python benchmarks/start_up.py darts                       # cells and mixed ops build by shape

``fit`` times the README's own-script example (``compile("adam", ..., metrics=["accuracy"])``,
64 random images, batch 32, one epoch) from ``compile`` to the end of the first ``fit``, then a
second ``fit``. ``darts`` times making ``DartsSearch`` over the paper's CIFAR-10 search network
(8 cells, C=16).
"""

from __future__ import annotations

import argparse
import sys
import time

import keras
import numpy as np


def first_fit(name: str, size: int, keras_alone: bool) -> str:
    """Seconds of the first and the second ``fit`` of a kerasdl model from a user's script."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    import kerasdl
    from kerasdl.training.single_trace import TracesOnce

    if keras_alone:
        TracesOnce._maybe_symbolic_build = TensorFlowTrainer._maybe_symbolic_build
    rng = np.random.default_rng(0)
    x = rng.random((64, size, size, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, 64), 10)
    model = kerasdl.create_model(name, num_classes=10, input_shape=(size, size, 3))
    start = time.perf_counter()
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    second = time.perf_counter() - start
    side = "keras" if keras_alone else "kerasdl"
    return f"{side} {name} {size}x{size}: first fit {first:.2f} s, second fit {second:.2f} s"


def darts_build(symbolic: bool) -> str:
    """Seconds to make the DARTS search over the paper's CIFAR-10 search network."""
    from kerasdl.layers.darts_ops import PRIMITIVES
    from kerasdl.nas import search_model as sm
    from kerasdl.nas.search import DartsSearch

    if symbolic:  # the build before 2026-11-28: alphas here, every other layer by a call

        def alphas_only(self: sm.SearchNetwork, input_shape: tuple) -> None:
            init = keras.initializers.RandomNormal(stddev=1e-3, seed=self.seed)
            shape = (sm.num_edges(self.steps), len(PRIMITIVES))
            for kind in ("normal", "reduce"):
                alphas = self.add_weight(shape=shape, initializer=init, name=f"alphas_{kind}")
                setattr(self, f"alphas_{kind}", alphas)

        sm.SearchNetwork.build = alphas_only
        del sm.SearchCell.build, sm.MixedOp.build
    start = time.perf_counter()
    network = sm.SearchNetwork(10, (32, 32, 3), init_channels=16, layers=8)
    DartsSearch(network)
    seconds = time.perf_counter() - start
    side = "symbolic" if symbolic else "by shape"
    weights = len(network.weights)
    return f"DARTS search, CIFAR-10 network, built {side}: {seconds:.1f} s, {weights} weights"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fit = sub.add_parser("fit", help="a user's first fit")
    fit.add_argument("model")
    fit.add_argument("size", type=int)
    fit.add_argument("--keras", action="store_true", help="Keras alone (two traces)")
    darts = sub.add_parser("darts", help="making the DARTS search")
    darts.add_argument("--symbolic", action="store_true", help="the old build")
    args = parser.parse_args()
    from kerasdl.errors import UserError

    try:
        if args.what == "fit":
            print(first_fit(args.model, args.size, args.keras))
        else:
            print(darts_build(args.symbolic))
    except UserError as err:  # e.g. an unknown model name: one line, exit status 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
