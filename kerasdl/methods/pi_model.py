"""The Pi-model: consistency between two stochastic passes of the same input.

Every unlabelled image is seen twice in one step, each time with its own augmentation and dropout
noise; the squared difference of the two softmax outputs (averaged over the classes) is penalized
with a weight ``w(t)`` that ramps up along the Gaussian curve ``exp(-5 (1 - t)^2)``. Labelled
images add the usual cross-entropy. Gradients flow through both passes, as in the paper.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.methods.base import SemiSupervisedModel
from kerasdl.methods.losses import sigmoid_rampup, soft_cross_entropy, softmax_mse


@keras.saving.register_keras_serializable(package="kerasdl")
class PiModel(SemiSupervisedModel):
    """Pi-model semi-supervised training around a classifier.

    Args:
        backbone: a registry classifier returning logits (with dropout, as in the paper).
        num_classes: number of classes.
        consistency_weight: maximum weight ``w_max`` of the consistency term (100 in the paper,
            where it is also scaled by the labelled fraction M/N: pass ``100 * M / N`` for that).
        rampup_steps: optimizer steps of the Gaussian ramp-up (80 epochs in the paper).
        seed: seed of the method's random generator.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the backbone runs in training mode.

    Training data: ``((x_labelled, y_onehot), (u_view1, u_view2))``, two independent augmentations
    of the same unlabelled images (``kerasdl.data.ssl.semi_supervised_dataset(...,
    views="two_weak")``). Logged: ``loss``, ``loss_x``, ``loss_u`` (consistency), ``weight_u``
    (current ``w(t)``), ``accuracy``.

    Example:
        >>> method = PiModel(kerasdl.create_model("simple_cnn", num_classes=10), 10)
        >>> method.compile(keras.optimizers.Adam(3e-3, beta_1=0.9, beta_2=0.999))

    Reference:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, section 2.1
        and Algorithm 1 (Pi-model), ramp-up in section 3.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        consistency_weight: float = 100.0,
        rampup_steps: int = 4000,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, num_classes, ema_decay=None, seed=seed, **kwargs)
        self.consistency_weight = float(consistency_weight)
        self.rampup_steps = int(rampup_steps)
        self._make_trackers(["loss", "loss_x", "loss_u", "weight_u"], accuracy=True)
        self._finish_build()

    def train_step(self, data):
        x_l, y_l, u = self.unpack(data)
        u1, u2 = u[0], u[1]
        n_l, n_u = tf.shape(x_l)[0], tf.shape(u1)[0]
        w = self.consistency_weight * sigmoid_rampup(self.optimizer.iterations, self.rampup_steps)
        with tf.GradientTape() as tape:
            logits = self.backbone(tf.concat([x_l, u1, u2], axis=0), training=True)
            logits_l = logits[:n_l]
            loss_x = tf.reduce_mean(soft_cross_entropy(y_l, logits_l))
            loss_u = tf.reduce_mean(softmax_mse(logits[n_l : n_l + n_u], logits[n_l + n_u :]))
            loss = loss_x + w * loss_u
        self._apply(tape, loss)
        self._accuracy(y_l, logits_l)
        return self._log({"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "weight_u": w})
