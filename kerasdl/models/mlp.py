"""The multi-layer perceptron, in Keras and from scratch in NumPy.

:class:`MLP` is a registered Keras model: flatten, ``hidden_units`` fully connected layers with a
chosen activation (sigmoid by default, as in Rumelhart, Hinton & Williams 1986), and a linear head
returning logits. One hidden layer is enough to solve XOR, which no single perceptron can.

:class:`NumpyMLP` is the same network written with explicit forward and backward passes
(backpropagation, the chain rule layer by layer); :meth:`NumpyMLP.from_keras` copies the weights of
an :class:`MLP`, and its gradients equal Keras' autodiff gradients (tested in float64).

References:
    Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors", Nature
    323, 1986. Minsky & Papert, "Perceptrons", 1969.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasdl.layers.activations import get_activation
from kerasdl.models.base import HEAD, PRE_LOGITS, Classifier, check_num_classes
from kerasdl.registry import register_variants


def _head_dtype() -> str:
    # The classifier contract keeps logits in float32 under mixed precision; a float64 model
    # (gradient checks) keeps float64 logits.
    return "float64" if keras.config.dtype_policy().compute_dtype == "float64" else "float32"


@keras.saving.register_keras_serializable(package="kerasdl")
class MLP(Classifier):
    """Multi-layer perceptron classifier.

    Args:
        num_classes: output logits (1 for a binary problem with a sigmoid loss); 0 for features.
        input_shape: input shape; flattened first.
        hidden_units: width of each hidden layer.
        activation: hidden activation (see ``kerasdl.layers.activations``); sigmoid by default.
        dropout: dropout after each hidden activation.
        init_std: 0 keeps Keras's default initializer of the hidden kernels (Glorot uniform);
            a positive value draws them from N(0, init_std^2), the fixed-scale "naive" scheme
            (0.01 in Krizhevsky et al. 2012) that He et al. 2015 (sec. 2.2) show stalls deep
            rectifier networks.

    Example:
        >>> model = MLP(num_classes=1, input_shape=(2,), hidden_units=[4])
        >>> model.compile(keras.optimizers.Adam(0.1),
        ...               keras.losses.BinaryCrossentropy(from_logits=True))

    Reference:
        Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors",
        Nature, 1986.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] | list[int] = (8, 8, 1),
        hidden_units: list[int] | tuple[int, ...] = (128,),
        activation: str = "sigmoid",
        dropout: float = 0.0,
        init_std: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0. Received: {init_std}")
        init = keras.initializers.RandomNormal(0.0, init_std) if init_std else "glorot_uniform"
        inputs = keras.Input(shape=tuple(input_shape), name="inputs")
        x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
        for i, units in enumerate(hidden_units):
            x = keras.layers.Dense(units, kernel_initializer=init, name=f"dense_{i}")(x)
            x = get_activation(activation, name=f"act_{i}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        x = keras.layers.Identity(name=PRE_LOGITS)(x)
        if num_classes:
            x = keras.layers.Dense(num_classes, dtype=_head_dtype(), name=HEAD)(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# activation: (f(z), f'(z) expressed with z)
_ACTIVATIONS = {
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "linear": (lambda z: z, np.ones_like),
}


class NumpyMLP:
    """A multi-layer perceptron with hand-written forward and backward passes, in NumPy.

    Layers ``z_l = h_{l-1} W_l + b_l``, ``h_l = f(z_l)``; the last layer is linear (logits). The
    loss is the mean softmax cross-entropy for several outputs, or the mean sigmoid binary
    cross-entropy for one output. :meth:`backward` applies the chain rule from
    ``dL/dz_L = (p - y) / B`` down: ``dW_l = h_{l-1}^T dz_l``, ``db_l = sum_b dz_l``,
    ``dz_{l-1} = (dz_l W_l^T) * f'(z_{l-1})``.

    Args:
        sizes: layer widths from input to output, e.g. ``[2, 4, 1]``.
        activation: hidden activation: ``sigmoid``, ``tanh``, ``relu`` or ``linear``.
        seed: seed of the Xavier-uniform initialisation.
        dtype: NumPy float type.

    Example:
        >>> net = NumpyMLP([2, 4, 1], seed=0)
        >>> for _ in range(2000):
        ...     loss = net.sgd_step(x_xor, y_xor, lr=1.0)

    Reference:
        Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors",
        Nature, 1986.
    """

    def __init__(
        self,
        sizes: list[int],
        activation: str = "sigmoid",
        seed: int | None = None,
        dtype: str = "float64",
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}: {activation!r}")
        rng = np.random.default_rng(seed)
        self.activation = activation
        self.weights = []
        self.biases = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype))
            self.biases.append(np.zeros(fan_out, dtype))
        self._cache: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    @classmethod
    def from_keras(cls, model: MLP) -> NumpyMLP:
        """A NumPy copy of a Keras :class:`MLP` (same weights, same activation, float64)."""
        net = cls.__new__(cls)
        net.activation = model.activation
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        net.weights = [np.asarray(keras.ops.convert_to_numpy(d.kernel), "float64") for d in dense]
        net.biases = [np.asarray(keras.ops.convert_to_numpy(d.bias), "float64") for d in dense]
        net._cache = None
        return net

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, K)``; keeps the pre-activations for :meth:`backward`."""
        f = _ACTIVATIONS[self.activation][0]
        hs, zs = [x.reshape(len(x), -1)], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = hs[-1] @ w + b
            zs.append(z)
            hs.append(z if i == len(self.weights) - 1 else f(z))
        self._cache = (hs, zs)
        return hs[-1]

    def loss(self, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient with respect to the logits, ``dL/dz_L``."""
        b = len(logits)
        if logits.shape[1] == 1:  # sigmoid binary cross-entropy
            y = y.reshape(b, 1).astype(logits.dtype)
            p = _sigmoid(logits)
            loss = np.mean(np.logaddexp(0.0, logits) - y * logits)
            return float(loss), (p - y) / b
        if y.ndim == 1:
            y = np.eye(logits.shape[1], dtype=logits.dtype)[y]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-np.mean(np.sum(y * log_p, axis=1))), (np.exp(log_p) - y) / b

    def backward(self, dlogits: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients ``(dW_l, db_l)`` of every layer from ``dL/dlogits`` (after :meth:`forward`)."""
        if self._cache is None:
            raise RuntimeError("Call forward() before backward().")
        hs, zs = self._cache
        df = _ACTIVATIONS[self.activation][1]
        dws, dbs = [None] * len(self.weights), [None] * len(self.weights)
        dz = dlogits
        for i in reversed(range(len(self.weights))):
            dws[i] = hs[i].T @ dz
            dbs[i] = dz.sum(axis=0)
            if i:
                dz = (dz @ self.weights[i].T) * df(zs[i - 1])
        return dws, dbs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """``(loss, dWs, dbs)`` for a batch."""
        loss, dlogits = self.loss(self.forward(x), y)
        dws, dbs = self.backward(dlogits)
        return loss, dws, dbs

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float = 0.1) -> float:
        """One plain gradient-descent step; returns the loss before the step."""
        loss, dws, dbs = self.loss_and_grads(x, y)
        for w, b, dw, db in zip(self.weights, self.biases, dws, dbs, strict=True):
            w -= lr * dw
            b -= lr * db
        return loss


VARIANTS = {"mlp": {}}

register_variants(
    MLP,
    VARIANTS,
    family="foundations",
    paper="Rumelhart, Hinton & Williams 1986",
    year=1986,
    default_input=(8, 8, 1),
    min_input=2,
)
