"""From the McCulloch-Pitts neuron to backpropagation, on four points, with plain Keras ``fit``.

1. McCulloch-Pitts neurons (1943) wired as AND, OR and NOT, checked on their truth tables.
2. Rosenblatt's perceptron (1958) trained by the perceptron rule with ``model.fit``: it learns AND
   and OR, and never exceeds 3/4 on XOR (Minsky & Papert 1969: XOR is not linearly separable).
3. A multi-layer perceptron with sigmoid units (Rumelhart, Hinton & Williams 1986) solves XOR
   with ``model.fit`` and Adam.
4. The same MLP written in NumPy with explicit forward and backward passes: its gradients match
   Keras' automatic differentiation in float64, and it learns XOR by plain gradient descent.

Usage::

    python apps/xor_perceptron.py            # about 20 s on a CPU
    python apps/xor_perceptron.py --smoke    # a few seconds: fewer epochs
"""

from __future__ import annotations

import argparse

from kerasdl.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up lines (CUDA probe, oneDNN notice) stay off stderr

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasdl  # noqa: E402
from kerasdl.models.mlp import NumpyMLP  # noqa: E402
from kerasdl.models.perceptron import logic_gate  # noqa: E402

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
TARGETS = {
    "AND": np.array([0, 0, 0, 1], "float32"),
    "OR": np.array([0, 1, 1, 1], "float32"),
    "XOR": np.array([0, 1, 1, 0], "float32"),
}


def mcculloch_pitts() -> None:
    print("== 1. McCulloch-Pitts neurons (fixed weights, threshold) ==")
    for name in ("AND", "OR"):
        out = keras.ops.convert_to_numpy(logic_gate(name.lower())(X))[:, 0]
        rows = ", ".join(f"{a:.0f}{b:.0f}->{o:.0f}" for (a, b), o in zip(X, out, strict=True))
        status = "ok" if np.array_equal(out, TARGETS[name]) else "WRONG"
        print(f"{name:<4} truth table {status}: {rows}")
    out = keras.ops.convert_to_numpy(logic_gate("not")(np.array([[0.0], [1.0]], "float32")))
    status = "ok" if np.array_equal(out[:, 0], [1.0, 0.0]) else "WRONG"
    print(f"NOT  truth table {status}: 0->{out[0, 0]:.0f}, 1->{out[1, 0]:.0f}")


def perceptron(epochs: int) -> None:
    print(f"\n== 2. Rosenblatt perceptron, perceptron rule, model.fit ({epochs} epochs) ==")
    for name, y in TARGETS.items():
        keras.utils.set_random_seed(0)
        model = kerasdl.create_model("perceptron", num_classes=1, input_shape=(2,))
        model.compile()
        hist = model.fit(X, y, batch_size=1, epochs=epochs, shuffle=False, verbose=0)
        acc = model.evaluate(X, y, verbose=0, return_dict=True)["accuracy"]
        best = max(hist.history["accuracy"])
        note = " (not linearly separable: at most 3 of 4)" if name == "XOR" else ""
        print(f"{name} perceptron accuracy: {acc:.2f}, best epoch {best:.2f}{note}")


def mlp(epochs: int) -> None:
    print(
        f"\n== 3. Multi-layer perceptron (sigmoid, 8 hidden units), Adam, {epochs} x 100 steps =="
    )
    keras.utils.set_random_seed(1)
    model = kerasdl.create_model("mlp", num_classes=1, input_shape=(2,), hidden_units=[8])
    model.compile(keras.optimizers.Adam(0.1), keras.losses.BinaryCrossentropy(from_logits=True))
    # An epoch is 100 copies of the four points, one full-batch step per copy.
    x, y = np.tile(X, (100, 1)), np.tile(TARGETS["XOR"], 100)
    hist = model.fit(x, y, batch_size=4, epochs=epochs, verbose=0)
    pred = (keras.ops.convert_to_numpy(model(X))[:, 0] > 0).astype("float32")
    acc = float(np.mean(pred == TARGETS["XOR"]))
    print(f"XOR MLP accuracy: {acc:.2f}, final loss {hist.history['loss'][-1]:.4f}")


def numpy_backprop(steps: int) -> None:
    print("\n== 4. NumPy MLP: explicit backward pass vs Keras autodiff (float64) ==")
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(2)
        model = kerasdl.create_model("mlp", num_classes=1, input_shape=(2,), hidden_units=[4])
        x, y = X.astype("float64"), TARGETS["XOR"].reshape(-1, 1).astype("float64")
        with tf.GradientTape() as tape:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)(y, model(x))
        autodiff = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(old_policy)
    net = NumpyMLP.from_keras(model)
    _, dws, dbs = net.loss_and_grads(x, y)
    ours = [g for pair in zip(dws, dbs, strict=True) for g in pair]
    rel = max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
        for a, b in zip(ours, autodiff, strict=True)
    )
    print(f"max |numpy - autodiff| relative to the gradient size: {rel:.1e}")
    net = NumpyMLP([2, 4, 1], activation="sigmoid", seed=0)
    first = net.sgd_step(x, y, lr=2.0)
    for _ in range(steps):
        last = net.sgd_step(x, y, lr=2.0)
    acc = float(np.mean((net.forward(x)[:, 0] > 0) == TARGETS["XOR"]))
    print(f"NumPy MLP, {steps} gradient steps: loss {first:.3f} -> {last:.4f}, accuracy {acc:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="few epochs, for tests")
    args = parser.parse_args(argv)
    mcculloch_pitts()
    perceptron(epochs=3 if args.smoke else 20)
    mlp(epochs=1 if args.smoke else 5)
    numpy_backprop(steps=100 if args.smoke else 3000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
