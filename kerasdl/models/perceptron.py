"""The historical foundations: the McCulloch-Pitts neuron and Rosenblatt's perceptron.

* :class:`McCullochPittsNeuron` is the 1943 binary threshold unit: fixed (not learned) excitatory
  weights, absolute inhibitory inputs and a threshold; :func:`logic_gate` builds AND, OR and NOT
  from it.
* :class:`Perceptron` is Rosenblatt's learning machine: a linear threshold unit trained by the
  perceptron rule ``w <- w + lr (y - y_hat) x`` in a ``train_step`` override, so it trains with
  plain ``fit()`` and no gradient descent. With ``batch_size=1`` this is the online rule of the
  paper; with larger batches the updates of the batch are summed (the batch perceptron).

References:
    McCulloch & Pitts, "A Logical Calculus of the Ideas Immanent in Nervous Activity", Bulletin of
    Mathematical Biophysics 5, 1943. Rosenblatt, "The Perceptron: A Probabilistic Model for
    Information Storage and Organization in the Brain", Psychological Review 65(6), 1958.
    Minsky & Papert, "Perceptrons", 1969 (XOR is not linearly separable).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.models.base import Classifier, classifier_head
from kerasdl.registry import register_variants


@keras.saving.register_keras_serializable(package="kerasdl")
class McCullochPittsNeuron(keras.layers.Layer):
    """Binary threshold unit with fixed weights (McCulloch & Pitts 1943).

    Fires (outputs 1) when the weighted sum of its binary inputs reaches ``threshold`` and no
    inhibitory input is active (the paper's absolute inhibition); outputs 0 otherwise. Nothing is
    learned: the weights are constants.

    Args:
        weights: one excitatory weight per input (inhibitory inputs' weights are ignored).
        threshold: firing threshold.
        inhibitory: indices of inhibitory inputs; any active one prevents firing.

    Call arguments:
        inputs: ``(B, n)`` tensor of 0/1 values.

    Example:
        >>> and_gate = McCullochPittsNeuron(weights=[1, 1], threshold=2)
        >>> and_gate(keras.ops.convert_to_tensor([[1.0, 1.0], [1.0, 0.0]]))  # [[1], [0]]

    Reference:
        McCulloch & Pitts, "A Logical Calculus of the Ideas Immanent in Nervous Activity", 1943.
    """

    def __init__(
        self,
        weights: list[float] | tuple[float, ...],
        threshold: float,
        inhibitory: list[int] | tuple[int, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(trainable=False, **kwargs)
        self.unit_weights = [float(w) for w in weights]
        self.threshold = float(threshold)
        self.inhibitory = [int(i) for i in inhibitory]

    def call(self, inputs):
        x = ops.cast(inputs, "float32")  # (B, n)
        excit = [0.0 if i in self.inhibitory else w for i, w in enumerate(self.unit_weights)]
        total = ops.sum(x * ops.convert_to_tensor(excit, "float32"), axis=-1, keepdims=True)
        fire = total >= self.threshold
        if self.inhibitory:
            inhib = ops.take(x, self.inhibitory, axis=-1)
            fire = ops.logical_and(fire, ops.all(inhib <= 0.0, axis=-1, keepdims=True))
        return ops.cast(fire, "float32")  # (B, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("trainable", None)
        return {
            **config,
            "weights": self.unit_weights,
            "threshold": self.threshold,
            "inhibitory": self.inhibitory,
        }


# Gates as McCulloch-Pitts neurons (McCulloch & Pitts 1943).
GATES = {
    "and": dict(weights=[1.0, 1.0], threshold=2.0),
    "or": dict(weights=[1.0, 1.0], threshold=1.0),
    "not": dict(weights=[1.0], threshold=0.0, inhibitory=[0]),
}


def logic_gate(name: str) -> McCullochPittsNeuron:
    """A McCulloch-Pitts neuron wired as the gate ``"and"``, ``"or"`` or ``"not"``.

    AND fires when both inputs are on (threshold 2), OR when either is (threshold 1), and NOT is a
    unit with threshold 0 whose single input is inhibitory: it fires unless the input is on.
    """
    if name not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}. Received: {name!r}")
    return McCullochPittsNeuron(**GATES[name], name=f"mp_{name}")


@keras.saving.register_keras_serializable(package="kerasdl")
class Perceptron(Classifier):
    """Rosenblatt's perceptron, trained by the perceptron learning rule inside ``fit()``.

    The input is flattened and scored by one linear layer (``"head"``); the model returns the
    scores (logits). With ``num_classes=1`` it is the binary threshold unit: ``y_hat = 1`` when the
    score is positive, and training applies ``w <- w + lr (y - y_hat) x`` (bias: ``x = 1``). With
    ``num_classes >= 2`` it is the multi-class perceptron: ``y_hat`` is the one-hot arg-max and
    the same rule ``W <- W + lr x^T (y - y_hat)`` raises the true class's weights and lowers the
    predicted one's. No gradient is computed and the compiled optimizer is not used.

    Args:
        num_classes: 1 for a binary unit (labels 0/1 of shape ``(B,)`` or ``(B, 1)``), or the
            number of classes (labels one-hot or integer).
        input_shape: the input shape; it is flattened.
        learning_rate: the perceptron rule's step ``lr``.

    Example:
        >>> model = Perceptron(num_classes=1, input_shape=(2,))
        >>> model.compile()
        >>> model.fit(x_and, y_and, batch_size=1, epochs=10)

    Reference:
        Rosenblatt, "The Perceptron: A Probabilistic Model for Information Storage and
        Organization in the Brain", Psychological Review, 1958.
    """

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: tuple[int, ...] | list[int] = (20, 20, 1),
        learning_rate: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"A perceptron needs num_classes >= 1. Received: {num_classes}")
        inputs = keras.Input(shape=tuple(input_shape), name="inputs")
        x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
        outputs = classifier_head(x, num_classes)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.learning_rate = float(learning_rate)
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.errors_tracker = keras.metrics.Sum(name="errors")

    @property
    def metrics(self):
        return [self.accuracy_tracker, self.errors_tracker]

    def _targets(self, y):
        """Labels as a float ``(B, K)`` tensor of 0/1 (K = 1 for the binary unit)."""
        if self.num_classes == 1:
            return ops.reshape(ops.cast(y, "float32"), (-1, 1))
        if len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[-1] == 1):
            return ops.one_hot(ops.reshape(ops.cast(y, "int32"), (-1,)), self.num_classes)
        return ops.cast(y, "float32")

    def predict_labels(self, scores):
        """Threshold (binary) or one-hot arg-max (multi-class) of the scores, ``(B, K)``."""
        if self.num_classes == 1:
            return ops.cast(scores > 0, "float32")
        return ops.one_hot(ops.argmax(scores, axis=-1), self.num_classes)

    def _update_metrics(self, target, y_hat):
        correct = ops.all(ops.equal(target, y_hat), axis=-1)
        self.accuracy_tracker.update_state(ops.cast(correct, "float32"))
        self.errors_tracker.update_state(ops.sum(1.0 - ops.cast(correct, "float32")))

    def train_step(self, data):
        x, y = data[0], data[1]
        target = self._targets(y)  # (B, K)
        head = self.get_layer("head")
        flat = ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))  # (B, n)
        y_hat = self.predict_labels(head(flat))  # (B, K)
        delta = self.learning_rate * (target - y_hat)  # (B, K)
        head.kernel.assign_add(ops.matmul(ops.transpose(flat), delta))  # (n, K)
        head.bias.assign_add(ops.sum(delta, axis=0))
        self._update_metrics(target, y_hat)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        target = self._targets(y)
        self._update_metrics(target, self.predict_labels(self(x, training=False)))
        return {m.name: m.result() for m in self.metrics}


VARIANTS = {"perceptron": {}}

register_variants(
    Perceptron,
    VARIANTS,
    family="foundations",
    paper="Rosenblatt 1958",
    year=1958,
    default_input=(20, 20, 1),  # the Mark I perceptron's 20 x 20 photocell retina
    min_input=2,
)
