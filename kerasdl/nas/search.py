"""DARTS bilevel optimization as a ``keras.Model`` whose ``train_step`` alternates two updates.

Each step takes one batch from each half of the training data (Algorithm 1 of the paper):

1. architecture step on the *validation* half: alpha <- alpha - lr_a * grad_alpha L_val(w', alpha)
   with ``w' = w`` (first order, the default) or, with ``unrolled=True``, the one-step unrolled
   weights ``w' = w - xi * grad_w L_train(w, alpha)`` (second order, eq. 6), whose gradient is
   eq. 7 with the Hessian-vector product approximated by finite differences (eq. 8):
   ``grad_alpha L_val(w', a) - xi * (grad_alpha L_train(w+, a) - grad_alpha L_train(w-, a)) / 2eps``
   with ``w+- = w +- eps * grad_w' L_val(w', a)`` and ``eps = 0.01 / ||grad_w' L_val||``;
2. weight step on the *training* half: w <- w - lr_w * grad_w L_train(w, alpha).

Defaults are the paper's: weights by SGD (momentum 0.9, lr 0.025 cosine-annealed to 0.001, weight
decay 3e-4, gradients clipped to global norm 5), alphas by Adam (lr 3e-4, betas (0.5, 0.999),
weight decay 1e-3). Weight decay is L2 added to the gradient, as PyTorch's ``weight_decay`` in
the reference. As in the reference, ``xi`` is the weights' current learning rate and the virtual
step includes the momentum and the weight decay.

Feed it ``((x_train, y_train), (x_val, y_val))`` batches (``Dataset.zip`` of the two halves) with
one-hot labels; ``evaluate`` / ``validation_data`` take ordinary ``(x, y)`` batches.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, sections 2.3;
    https://github.com/quark0/darts (``cnn/architect.py``, ``cnn/train_search.py``).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.nas.search_model import SearchNetwork
from kerasdl.training.single_trace import TracesOnce


def default_weight_optimizer(
    steps: int,
    learning_rate: float = 0.025,
    learning_rate_min: float = 0.001,
    momentum: float = 0.9,
) -> keras.optimizers.Optimizer:
    """SGD with momentum and the learning rate cosine-annealed to ``learning_rate_min``."""
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, steps), alpha=learning_rate_min / learning_rate
    )
    return keras.optimizers.SGD(schedule, momentum=momentum)


class DartsSearch(TracesOnce, keras.Model):
    """First- or second-order DARTS search over a :class:`SearchNetwork`.

    Args:
        network: the search network (holds the weights and the alphas).
        unrolled: second-order approximation (eq. 7-8); first order when false.
        weight_decay: L2 on the network weights (3e-4).
        grad_clip: global-norm clipping of the weight gradients (5).
        arch_learning_rate: Adam learning rate of the alphas (3e-4).
        arch_beta_1: Adam beta_1 of the alphas (0.5).
        arch_beta_2: Adam beta_2 of the alphas (0.999).
        arch_weight_decay: L2 on the alphas (1e-3).

    Call arguments:
        x: images; returns the network's logits.
        training: batch statistics when true.

    Example:
        >>> net = SearchNetwork(10, (16, 16, 1), init_channels=8, layers=5)
        >>> search = DartsSearch(net)
        >>> search.compile(optimizer=default_weight_optimizer(steps=100))
        >>> search.fit(tf.data.Dataset.zip(train_half, val_half), validation_data=val, epochs=5)
        >>> net.genotype()

    Reference:
        Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
    """

    def __init__(
        self,
        network: SearchNetwork,
        unrolled: bool = False,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_learning_rate: float = 3e-4,
        arch_beta_1: float = 0.5,
        arch_beta_2: float = 0.999,
        arch_weight_decay: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.unrolled = unrolled
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.arch_weight_decay = arch_weight_decay
        self.arch_optimizer = keras.optimizers.Adam(
            arch_learning_rate, beta_1=arch_beta_1, beta_2=arch_beta_2, epsilon=1e-8
        )
        self.loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc_tracker = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.arch_loss_tracker = keras.metrics.Mean(name="arch_loss")
        self.arch_acc_tracker = keras.metrics.CategoricalAccuracy(name="arch_accuracy")
        # Build the network eagerly so that every variable exists before tracing.
        network(tf.zeros((2, *network.input_shape_)), training=False)
        variables = network.trainable_variables
        arch = {id(a) for a in network.arch_variables}
        self._arch_index = [i for i, v in enumerate(variables) if id(v) in arch]
        self._weight_index = [i for i, v in enumerate(variables) if id(v) not in arch]
        # One traced function computes the loss and the gradients on a batch; every step calls it
        # two (first order) or five (second order) times, so the network is traced only once.
        spec = [
            tf.TensorSpec((None, *network.input_shape_), tf.float32),
            tf.TensorSpec((None, network.num_classes), tf.float32),
        ]
        self._grad_fn = tf.function(self._loss_and_gradients, input_signature=spec)
        self._predict_fn = tf.function(
            lambda x: network(x, training=False), input_signature=spec[:1]
        )

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.acc_tracker, self.arch_loss_tracker, self.arch_acc_tracker]

    def call(self, x, training=None):
        return self.network(x, training=training)

    def build_optimizers(self) -> None:
        """Create both optimizers' variables (weights and alphas apart), if not yet created.

        Called before ``fit`` traces the step (:func:`kerasdl.training.single_trace.
        create_optimizer_variables`) and again, as a no-op, by the step itself.
        """
        if not self.optimizer.built:
            self.optimizer.build(self.network.weight_variables)
        if not self.arch_optimizer.built:
            self.arch_optimizer.build(self.network.arch_variables)

    def _loss_and_gradients(self, x, y):
        """Loss, logits and gradients w.r.t. all trainable variables (weights and alphas).

        The loss includes the kernel penalty the network's variables carry (``training.l1/l2``,
        :func:`kerasdl.training.regularizers.add_kernel_penalties`; none by default), in float32.
        """
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.network(x, training=True)
            loss = self.loss_fn(y, logits)
            reg = [v for v in variables if getattr(v, "regularizer", None) is not None]
            if reg:
                penalty = tf.add_n([tf.cast(v.regularizer(v), tf.float32) for v in reg])
                loss = loss + tf.cast(penalty, loss.dtype)
        grads = tape.gradient(loss, variables)
        # A network without normal (or reduction) cells leaves those alphas without gradient.
        grads = [
            tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables, strict=True)
        ]
        return loss, logits, grads

    def _split(self, grads: list) -> tuple[list, list]:
        """(alpha gradients, weight gradients) from gradients over all trainable variables."""
        return [grads[i] for i in self._arch_index], [grads[i] for i in self._weight_index]

    # --- the two gradient computations --------------------------------------------------------

    def arch_gradients(self, train_batch, val_batch) -> tuple[list, tf.Tensor, tf.Tensor]:
        """Gradients of the validation loss w.r.t. the alphas (+ L2), the val loss and logits.

        The training batch is used only by the second-order approximation.
        """
        alphas = self.network.arch_variables
        if self.unrolled:
            grads, loss, logits = self._unrolled_arch_gradients(train_batch, val_batch)
        else:
            loss, logits, all_grads = self._grad_fn(*val_batch)
            grads, _ = self._split(all_grads)
        grads = [g + self.arch_weight_decay * a for g, a in zip(grads, alphas, strict=True)]
        return grads, loss, logits

    def weight_gradients(self, train_batch) -> tuple[list, tf.Tensor, tf.Tensor]:
        """Clipped gradients of the training loss w.r.t. the weights (+ L2), the loss and logits."""
        weights = self.network.weight_variables
        loss, logits, all_grads = self._grad_fn(*train_batch)
        _, grads = self._split(all_grads)
        grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        grads = [g + self.weight_decay * w for g, w in zip(grads, weights, strict=True)]
        return grads, loss, logits

    def _virtual_step(self, x, y) -> list[tf.Tensor]:
        """The unrolled weights ``w - xi * (mu * momentum + grad + wd * w)`` (``architect.py``)."""
        weights = self.network.weight_variables
        _, grads = self._split(self._grad_fn(x, y)[2])
        xi = tf.cast(self.optimizer.learning_rate, tf.float32)
        mu = float(getattr(self.optimizer, "momentum", 0.0) or 0.0)
        new = []
        for w, g in zip(weights, grads, strict=True):
            moment = tf.zeros_like(w)
            if mu:
                # Keras keeps m = mu * m - lr * g; PyTorch's buffer is v = -m / lr.
                m = self.optimizer.momentums[self.optimizer._get_variable_index(w)]
                moment = -mu * m / xi
            new.append(w - xi * (moment + g + self.weight_decay * w))
        return new

    def _unrolled_arch_gradients(self, train_batch, val_batch):
        weights = self.network.weight_variables
        backup = [tf.identity(w) for w in weights]
        xi = tf.cast(self.optimizer.learning_rate, tf.float32)
        # w' = one virtual SGD step on the training batch; gradients of L_val at w'.
        for w, v in zip(weights, self._virtual_step(*train_batch), strict=True):
            w.assign(v)
        loss, logits, all_grads = self._grad_fn(*val_batch)
        d_alpha, vector = self._split(all_grads)
        # Finite-difference Hessian-vector product around w (eq. 8).
        eps = 0.01 / (tf.linalg.global_norm(vector) + 1e-12)
        grads_pn = []
        for sign in (1.0, -1.0):
            for w, b, v in zip(weights, backup, vector, strict=True):
                w.assign(b + sign * eps * v)
            grads_pn.append(self._split(self._grad_fn(*train_batch)[2])[0])
        for w, b in zip(weights, backup, strict=True):
            w.assign(b)
        implicit = [(gp - gn) / (2.0 * eps) for gp, gn in zip(*grads_pn, strict=True)]
        return [g - xi * h for g, h in zip(d_alpha, implicit, strict=True)], loss, logits

    # --- Keras hooks --------------------------------------------------------------------------

    def train_step(self, data):
        train_batch, val_batch = data
        self.build_optimizers()
        a_grads, a_loss, a_logits = self.arch_gradients(train_batch, val_batch)
        self.arch_optimizer.apply_gradients(zip(a_grads, self.network.arch_variables, strict=True))
        w_grads, loss, logits = self.weight_gradients(train_batch)
        self.optimizer.apply_gradients(zip(w_grads, self.network.weight_variables, strict=True))
        self.loss_tracker.update_state(loss)
        self.acc_tracker.update_state(train_batch[1], logits)
        self.arch_loss_tracker.update_state(a_loss)
        self.arch_acc_tracker.update_state(val_batch[1], a_logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self._predict_fn(x)
        self.loss_tracker.update_state(self.loss_fn(y, logits))
        self.acc_tracker.update_state(y, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.acc_tracker.result()}
