"""Pseudo-Label: train on the model's own confident predictions for unlabelled data.

Each step the network labels the unlabelled batch with its own class predictions (recomputed at
every update, no gradient through the targets) and adds the cross-entropy against those hard
labels, weighted by ``alpha(t)``: 0 until ``rampup_start``, rising linearly to ``weight`` at
``rampup_end``. The thresholded variant keeps only predictions whose maximum probability reaches
``threshold`` (``threshold=0`` is Lee's original method).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.methods.base import SemiSupervisedModel
from kerasdl.methods.fixmatch import fixmatch_mask
from kerasdl.methods.losses import hard_cross_entropy, linear_rampup, soft_cross_entropy


@keras.saving.register_keras_serializable(package="kerasdl")
class PseudoLabel(SemiSupervisedModel):
    """Pseudo-labelling (with an optional confidence threshold) around a classifier.

    Args:
        backbone: a registry classifier returning logits.
        num_classes: number of classes.
        weight: final weight ``alpha_f`` of the unlabelled loss (3 in the paper).
        threshold: minimum confidence of a kept pseudo-label (0.95; 0 keeps all, as in Lee 2013).
        rampup_start: step where ``alpha(t)`` starts rising (the paper's T1 = 100, in epochs there).
        rampup_end: step where it reaches ``weight`` (the paper's T2 = 600).
        seed: seed of the method's random generator.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the backbone runs in training mode.

    Training data: ``((x_labelled, y_onehot), (u,))`` (``views="weak"`` in ``kerasdl.data.ssl``).
    Logged: ``loss``, ``loss_x``, ``loss_u``, ``weight_u``, ``mask_rate``, ``accuracy``.

    Example:
        >>> method = PseudoLabel(kerasdl.create_model("simple_cnn", num_classes=10), 10)
        >>> method.compile(keras.optimizers.SGD(0.03, momentum=0.9))

    Reference:
        Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
        Neural Networks", ICML 2013 Workshop on Challenges in Representation Learning, equations
        (15)-(16); the confidence threshold as in Sohn et al. 2020 (FixMatch), section 2.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        weight: float = 3.0,
        threshold: float = 0.95,
        rampup_start: int = 100,
        rampup_end: int = 600,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, num_classes, ema_decay=None, seed=seed, **kwargs)
        self.weight = float(weight)
        self.threshold = float(threshold)
        self.rampup_start = int(rampup_start)
        self.rampup_end = int(rampup_end)
        self._make_trackers(["loss", "loss_x", "loss_u", "weight_u", "mask_rate"], accuracy=True)
        self._finish_build()

    def train_step(self, data):
        x_l, y_l, u = self.unpack(data)
        n_l = tf.shape(x_l)[0]
        alpha = self.weight * linear_rampup(
            self.optimizer.iterations, self.rampup_start, self.rampup_end
        )
        with tf.GradientTape() as tape:
            logits = self.backbone(tf.concat([x_l, u[0]], axis=0), training=True)
            logits_l, logits_u = logits[:n_l], logits[n_l:]
            loss_x = tf.reduce_mean(soft_cross_entropy(y_l, logits_l))
            pseudo, mask = fixmatch_mask(logits_u, self.threshold)
            loss_u = tf.reduce_mean(hard_cross_entropy(pseudo, logits_u) * mask)
            loss = loss_x + alpha * loss_u
        self._apply(tape, loss)
        self._accuracy(y_l, logits_l)
        return self._log(
            {
                "loss": loss,
                "loss_x": loss_x,
                "loss_u": loss_u,
                "weight_u": alpha,
                "mask_rate": tf.reduce_mean(mask),
            }
        )
