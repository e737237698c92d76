"""FixMatch: pseudo-labels from a weak view, cross-entropy on a strong view.

For each unlabelled image the model's prediction on a weakly augmented view (flip and shift)
becomes a hard pseudo-label when its maximum probability reaches the threshold ``tau``; the model
is then trained to predict that label on a strongly augmented view (RandAugment followed by
Cutout). The total loss is ``l_s + lambda_u * l_u`` with ``l_u`` averaged over all ``mu * B``
unlabelled images (masked ones count as zero). Labelled, weak and strong batches go through the
network in one forward pass, so batch normalization sees all of them together, and evaluation uses
an exponential moving average of the weights (decay 0.999).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.methods.base import SemiSupervisedModel
from kerasdl.methods.losses import hard_cross_entropy, soft_cross_entropy


def fixmatch_mask(logits_weak, threshold: float):
    """``(pseudo_labels, mask)``: argmax of the weak-view softmax and ``max prob >= threshold``."""
    probs = tf.nn.softmax(tf.cast(tf.stop_gradient(logits_weak), tf.float32), axis=-1)
    return tf.argmax(probs, axis=-1), tf.cast(
        tf.reduce_max(probs, axis=-1) >= threshold, tf.float32
    )


@keras.saving.register_keras_serializable(package="kerasdl")
class FixMatchCosine(keras.optimizers.schedules.LearningRateSchedule):
    """FixMatch's learning-rate decay ``lr * cos(7 pi k / (16 K))`` over ``K`` total steps.

    Args:
        learning_rate: initial rate (0.03 in the paper).
        total_steps: K, the training length in optimizer steps.

    Reference:
        Sohn et al. 2020, section 4 ("cosine learning rate decay").
    """

    def __init__(self, learning_rate: float, total_steps: int) -> None:
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        k = tf.minimum(tf.cast(step, tf.float32), float(self.total_steps))
        return self.learning_rate * tf.cos(7.0 * np.pi * k / (16.0 * self.total_steps))

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="kerasdl")
class FixMatch(SemiSupervisedModel):
    """FixMatch semi-supervised training around a classifier.

    Args:
        backbone: a registry classifier returning logits (WRN-28-2 in the paper for CIFAR-10).
        num_classes: number of classes.
        threshold: confidence threshold tau for keeping a pseudo-label (0.95).
        lambda_u: weight of the unlabelled loss (1).
        mu: unlabelled-to-labelled batch ratio (7); the data pipeline batches accordingly, the
            value is kept here for the record and for ``kerasdl.data.ssl``.
        ema_decay: decay of the weight average used for evaluation (0.999); ``None`` evaluates
            the raw weights.
        ema_warmup: lower the decay early on as ``min(decay, (1 + t) / (10 + t))`` (the
            ``num_updates`` rule of ``tf.train.ExponentialMovingAverage``; the paper's 2^20-step
            runs do not need it, short runs do).
        seed: seed of the method's random generator.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: the trained backbone when true, else the EMA model.

    Training data: ``((x_labelled_weak, y_onehot), (u_weak, u_strong))`` with ``u_*`` of batch
    ``mu * B``; see ``kerasdl.data.ssl.semi_supervised_dataset(..., views="weak_strong")``.
    Logged: ``loss``, ``loss_x`` (labelled), ``loss_u`` (unlabelled), ``mask_rate`` (fraction of
    pseudo-labels kept), ``accuracy`` (labelled batch).

    Example:
        >>> net = kerasdl.create_model("wrn_28_2", num_classes=10, input_shape=(32, 32, 3))
        >>> method = FixMatch(net, num_classes=10)
        >>> method.compile(keras.optimizers.SGD(0.03, momentum=0.9, nesterov=True))
        >>> method.fit(train_ds, validation_data=test_ds, epochs=...)

    Reference:
        Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
        Confidence", NeurIPS 2020 (Algorithm 1; tau 0.95, lambda_u 1, mu 7, EMA 0.999).
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        ema_decay: float | None = 0.999,
        ema_warmup: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            backbone, num_classes, ema_decay=ema_decay, ema_warmup=ema_warmup, seed=seed, **kwargs
        )
        self.threshold = float(threshold)
        self.lambda_u = float(lambda_u)
        self.mu = int(mu)
        self._make_trackers(["loss", "loss_x", "loss_u", "mask_rate"], accuracy=True)
        self._finish_build()

    def train_step(self, data):
        x_l, y_l, u = self.unpack(data)
        u_weak, u_strong = u[0], u[1]
        n_l, n_u = tf.shape(x_l)[0], tf.shape(u_weak)[0]
        with tf.GradientTape() as tape:
            logits = self.backbone(tf.concat([x_l, u_weak, u_strong], axis=0), training=True)
            logits_l = logits[:n_l]
            logits_w = logits[n_l : n_l + n_u]
            logits_s = logits[n_l + n_u :]
            loss_x = tf.reduce_mean(soft_cross_entropy(y_l, logits_l))
            pseudo, mask = fixmatch_mask(logits_w, self.threshold)
            loss_u = tf.reduce_mean(hard_cross_entropy(pseudo, logits_s) * mask)
            loss = loss_x + self.lambda_u * loss_u
        self._apply(tape, loss)
        self._update_ema()
        self._accuracy(y_l, logits_l)
        return self._log(
            {"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "mask_rate": tf.reduce_mean(mask)}
        )
